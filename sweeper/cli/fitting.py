"""Commands of the fit stage: ``fit``, ``predict``, ``import steplaw``, ``import table``.

Bad input (missing folder or file, no complete trials, too few cells, a malformed mapping)
prints one ``error:`` line on stderr and exits with code 2, without a traceback and
without writing anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from sweeper.cli.common import fail
from sweeper.fit.registry import ESTIMATORS


@click.command("fit")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--estimator",
    type=click.Choice(["auto", *sorted(ESTIMATORS)]),
    default=None,
    help="How cell optima are read and which law form is fitted (default: auto, the"
    " estimator with the lowest leave-one-cell-out regret on this table).",
)
@click.option(
    "--bootstrap",
    "n_bootstrap",
    type=click.IntRange(min=0),
    default=1000,
    show_default=True,
    help="Bootstrap resamples (cells and runs within cells).",
)
@click.option(
    "--evaluate", is_flag=True, help="Also fit every estimator and report its leave-one-cell-out regret."
)
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
def fit(
    run_dir: Path, estimator: str | None, n_bootstrap: int, evaluate: bool, no_plots: bool, seed: int
) -> None:
    """Fit lr and batch-size laws to RUN_DIR's trials; write RUN_DIR/fit.json and plots/."""
    from sweeper.fit import DEFAULT_ESTIMATOR, fit_run

    report = fit_run(
        run_dir,
        estimator=estimator or DEFAULT_ESTIMATOR,
        n_bootstrap=n_bootstrap,
        evaluate=evaluate,
        plots=not no_plots,
        seed=seed,
    )
    for problem in report.problems:
        click.echo(f"warning: {problem}", err=True)
    click.echo(report.summary())


@click.command("predict")
@click.argument("fit_json", type=click.Path(path_type=Path))
@click.option(
    "--params",
    "n_params",
    type=float,
    required=True,
    help="Target N: non-embedding parameters (active ones for MoE).",
)
@click.option("--tokens", type=float, required=True, help="Target D: training tokens.")
@click.option("--seq-len", type=int, required=True, help="Target sequence length (tokens).")
@click.option(
    "--flops-per-token",
    type=float,
    default=None,
    help="Target M (non-embedding FLOPs/token) for compute-law fits; estimated from N if absent.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--force",
    is_flag=True,
    help="Print numbers that would be refused (undetermined law, target past the"
    " extrapolation limit, batch rounding > 2x), each reason as a FORCED warning.",
)
def predict(
    fit_json: Path,
    n_params: float,
    tokens: float,
    seq_len: int,
    flops_per_token: float | None,
    as_json: bool,
    force: bool,
) -> None:
    """Predict lr and batch size for a target run from FIT_JSON (a fit.json or its folder)."""
    from sweeper.hparams import load_hparams

    prediction = load_hparams(fit_json).predict(n_params, tokens, seq_len, flops_per_token, force=force)
    for warning in prediction.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        click.echo(json.dumps(prediction.to_dict(), allow_nan=False))
        return
    p = prediction

    def shown(interval, spec: str) -> str:  # noqa: ANN001 (a pair or None)
        return "UNDETERMINED" if interval is None else f"[{interval[0]:{spec}}, {interval[1]:{spec}}]"

    lines = [
        f"target N={p.n_params:.4g} D={p.tokens:.4g} seq_len={p.seq_len} (estimator {p.estimator})",
        f"learning rate            {p.lr:<11.4g} 95% interval {shown(p.lr_interval, '.4g')}",
        f"batch size (tokens)      {p.batch_size_tokens:<11.0f} 95% interval"
        f" {shown(p.batch_size_tokens_interval, '.0f')}",
        f"batch size (sequences)   {p.batch_size_sequences:<11d} 95% interval"
        f" {shown(p.batch_size_sequences_interval, 'd')}",
    ]
    if p.forced:
        lines.append(f"FORCED past {len(p.forced)} refusal(s): see the warnings above")
    if p.loss is not None:
        interval = (
            f" 95% interval [{p.loss_interval[0]:.4g}, {p.loss_interval[1]:.4g}]" if p.loss_interval else ""
        )
        lines.append(f"expected loss            {p.loss:<11.4g}{interval}")
    if p.power_schedule is not None:
        power = p.power_schedule
        lines.append(
            f"power scheduler          a {power['a']:.4g}, b {power['b']:.4f}, lr_max {power['lr_max']:.4g}"
            f" (lr at the end {power['lr_at_end']:.4g}; {power['formula']})"
        )
    click.echo("\n".join(lines))


@click.group("import")
def import_group() -> None:
    """Import another tool's sweep table into a run folder (then fit it as any run)."""


@import_group.command("steplaw")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Run folder to write.")
@click.option(
    "--size-column",
    default="N",
    show_default=True,
    help="Column used as the model size N (Na = active parameters, for MoE tables).",
)
@click.option(
    "--loss-column", default="smooth loss", show_default=True, help="Column used as the headline loss."
)
def import_steplaw_command(file: Path, out: Path, size_column: str, loss_column: str) -> None:
    """Import a Step Law results CSV (lr, bs in sequences, N/Na, D, loss, smooth loss)."""
    from sweeper.importers import import_steplaw

    rows = import_steplaw(file, out, size_column=size_column, loss_column=loss_column)
    click.echo(f"imported {rows} runs from {file} into {out / 'trials'}")


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key or not rest:
            fail(f"{option} expects COLUMN=VALUE, got '{value}'")
        pairs[key.strip()] = rest.strip()
    return pairs


@import_group.command("table")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Run folder to write.")
@click.option(
    "--map",
    "mapping",
    multiple=True,
    metavar="COLUMN=SOURCE",
    help="Trial column = source column, e.g. --map lr=learning_rate (repeat).",
)
@click.option(
    "--set",
    "constants",
    multiple=True,
    metavar="COLUMN=VALUE",
    help="Trial column = one value for every row, e.g. --set seq_len=2048 (repeat).",
)
def import_table_command(file: Path, out: Path, mapping: tuple[str, ...], constants: tuple[str, ...]) -> None:
    """Import any CSV/Parquet sweep table with a column mapping. Needs lr, loss, n_params,
    tokens_budget, seq_len and batch_size (sequences) or batch_size_tokens."""
    from sweeper.importers import import_table

    parsed_constants: dict[str, object] = {}
    for key, raw in _pairs(constants, "--set").items():
        try:
            parsed_constants[key] = float(raw) if any(c in raw for c in ".eE") else int(raw)
        except ValueError:
            parsed_constants[key] = raw
    rows = import_table(file, out, _pairs(mapping, "--map"), constants=parsed_constants)
    click.echo(f"imported {rows} runs from {file} into {out / 'trials'}")


COMMANDS = [fit, predict, import_group]
