"""Commands of the use stage: ``export`` (tables and trainer adapters) and ``target``.

Bad input prints one ``error:`` line on stderr and exits 2 without writing anything; a busy
run folder exits 3 (as ``submit`` does).
"""

from __future__ import annotations

from pathlib import Path

import click

from sweeper.runfolder import atomic_write, check_writable_file

# Kept in sync with sweeper.export.FORMATS by a test; listed here so `--help` needs no import.
_FORMATS = ("json", "yaml", "csv", "parquet", "hf", "torchtitan", "megatron", "nanogpt")


@click.command("export")
@click.argument("fit_json", type=click.Path(path_type=Path))
@click.option(
    "--targets",
    "targets_path",
    type=click.Path(path_type=Path),
    required=True,
    help="YAML list of targets, each {name, params, tokens, seq_len}.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(_FORMATS),
    required=True,
    help="A table (json, yaml, csv, parquet) or a trainer's own terms (hf, torchtitan, megatron, nanogpt).",
)
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="File to write.")
@click.option(
    "--round-to",
    type=click.IntRange(min=1),
    default=None,
    help="Round the batch (sequences) to a multiple of this [default: world size x micro-batch].",
)
@click.option(
    "--world-size",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Data-parallel ranks of the target run (trainer formats).",
)
@click.option(
    "--micro-batch",
    type=click.IntRange(min=1),
    default=None,
    help="Sequences per rank per forward pass [default: batch / world size].",
)
@click.option(
    "--only",
    "only",
    multiple=True,
    metavar="NAME",
    help="Export only these targets (repeat); nanogpt needs exactly one.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Export numbers that would be refused (undetermined law, extrapolation past the"
    " limit, batch rounding > 2x), each reason as a FORCED warning in the output.",
)
@click.option(
    "--schedule",
    "schedule_kind",
    type=click.Choice(["cosine", "constant", "wsd"]),
    default=None,
    help="The proxies' lr schedule, for a fit that recorded none (an imported table).",
)
@click.option(
    "--warmup-steps", type=click.IntRange(min=0), default=None, help="With --schedule: warmup steps."
)
@click.option(
    "--warmup-fraction", type=float, default=None, help="With --schedule: warmup share of the steps."
)
@click.option("--min-lr-ratio", type=float, default=None, help="With --schedule: final lr / peak lr.")
@click.option(
    "--decay-fraction", type=float, default=None, help="With --schedule wsd: decay share of the steps."
)
def export_command(
    fit_json: Path,
    targets_path: Path,
    fmt: str,
    out: Path,
    round_to: int | None,
    world_size: int,
    micro_batch: int | None,
    only: tuple[str, ...],
    force: bool,
    schedule_kind: str | None,
    warmup_steps: int | None,
    warmup_fraction: float | None,
    min_lr_ratio: float | None,
    decay_fraction: float | None,
) -> None:
    """Write FIT_JSON's predictions for every target in TARGETS as a table or trainer config."""
    from sweeper.export import ExportError, export, load_targets

    check_writable_file(out, "--out")
    options = {
        "warmup_steps": warmup_steps,
        "warmup_fraction": warmup_fraction,
        "min_lr_ratio": min_lr_ratio,
        "decay_fraction": decay_fraction,
    }
    given = {key: value for key, value in options.items() if value is not None}
    if given and schedule_kind is None:
        raise ExportError(
            f"--{next(iter(given)).replace('_', '-')} needs --schedule (cosine, constant or wsd)"
        )
    schedule = {"kind": schedule_kind, **given} if schedule_kind else None
    targets = load_targets(targets_path)
    if only:
        unknown = sorted(set(only) - {t.name for t in targets})
        if unknown:
            raise ExportError(f"--only names no target in {targets_path}: {', '.join(unknown)}")
        targets = [t for t in targets if t.name in only]
    payload = export(
        fit_json,
        targets,
        fmt,
        round_to=round_to,
        world_size=world_size,
        micro_batch=micro_batch,
        force=force,
        schedule=schedule,
    )
    atomic_write(out, payload)
    click.echo(f"wrote {len(targets)} target(s) as {fmt} to {out}")


@click.command("target")
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(path_type=Path))
@click.option(
    "--fit",
    "fit_json",
    type=click.Path(path_type=Path),
    required=True,
    help="fit.json (or its folder) whose laws set lr and batch.",
)
@click.option(
    "--params",
    "n_params",
    type=float,
    required=True,
    help="Target N (non-embedding parameters); the nearest shape of the recipe's family runs.",
)
@click.option("--tokens", type=float, required=True, help="Target D: training tokens.")
@click.option(
    "--bracket", is_flag=True, help="Also run lr x1/2, lr x2, B x1/2, B x2 and print the prediction's regret."
)
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Runs per point, with the recipe's first seed and the next ones; a point's loss"
    " is their mean and their spread is printed beside it.",
)
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path),
    default=None,
    help="Run folder for the target rows [default: <fit folder>/target].",
)
@click.option("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a local one).")
def target_command(
    recipe_path: Path,
    fit_json: Path,
    n_params: float,
    tokens: float,
    bracket: bool,
    seeds: int,
    out: Path | None,
    address: str | None,
) -> None:
    """Train RECIPE's model family at N params on D tokens with the fitted lr and batch."""
    from sweeper.outcome import TrialStatus
    from sweeper.recipe import load_recipe
    from sweeper.target import BracketPoint, run_target

    recipe = load_recipe(recipe_path)
    fit_path = Path(fit_json)
    run_dir = out or (fit_path if fit_path.is_dir() else fit_path.parent) / "target"

    def on_point(point: BracketPoint) -> None:
        outcome = point.outcome
        assert outcome is not None  # called once a point has ended
        loss = (
            f"loss {outcome.final_val_loss:.4f}" if outcome.status == TrialStatus.TARGET else outcome.status
        )
        click.echo(
            f"{point.label:<10} lr={point.lr:.4g} B={point.batch_size:<5d} seed={point.seed} {loss}"
            f"  {outcome.wall_seconds:.1f}s"
        )

    report = run_target(
        recipe,
        fit_json,
        n_params,
        tokens,
        run_dir,
        bracket=bracket,
        seeds=seeds,
        address=address,
        on_point=on_point,
    )
    for warning in report.prediction.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(report.table())
    click.echo(
        f"rows in {run_dir / 'trials'} (status target); summary {run_dir / 'target.json'}"
        f" ({report.wall_seconds:.0f}s, {report.reused} reused)"
    )


COMMANDS = [export_command, target_command]
