"""The ``report`` command: a run folder as one self-contained HTML page (sweeper/report/)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Where to write the page (default RUN_DIR/report.html).",
)
@click.option(
    "--targets",
    type=click.Path(path_type=Path),
    default=None,
    help="TARGETS.yaml to predict for (default: the recipe's targets).",
)
@click.option(
    "--bootstrap",
    "n_bootstrap",
    type=click.IntRange(min=0),
    default=None,
    help="Bootstrap resamples (default: fit.json's, else 1000).",
)
def report(run_dir: Path, out: Path | None, targets: Path | None, n_bootstrap: int | None) -> None:
    """Write RUN_DIR's report: summary, landscapes, laws, evaluation, predictions, warnings.

    One HTML file with everything inline: it opens without network, after the cluster is gone.
    """
    from sweeper.report import write_report

    # A ReportError (a SweeperError) is printed by the command group, with its exit code.
    click.echo(f"wrote {write_report(run_dir, out, targets=targets, n_bootstrap=n_bootstrap)}")


COMMANDS = [report]
