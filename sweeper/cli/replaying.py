"""CLI: ``sweeper replay`` -- a sweep answered from a recorded table (see sweeper/replay.py)."""

from __future__ import annotations

import sys

import click

from sweeper.errors import SweeperError


@click.command()
@click.argument("table", type=click.Path())
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Run folder to write.")
@click.option("--recipe", "recipe_path", type=click.Path(dir_okay=False),
              help="Replay this recipe's ladder and grid (default: the table's own cells and values).")
@click.option("--search", type=click.Choice(["grid", "adaptive"]), default="adaptive", show_default=True,
              help="grid: every recorded point; adaptive: the law-guided sampler.")
@click.option("--budget", type=float, help="adaptive: at most this share of the table's runs "
              "(default: the recipe's search.budget, 0.25).")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampler seed.")
@click.option("--size-column", default="N", show_default=True,
              help="Step Law CSV: the column of the law's model size (Na for MoE tables).")
def replay(table: str, out: str, recipe_path: str | None, search: str, budget: float | None,
           seed: int, size_column: str) -> None:
    """Run a sweep whose trials are answered from TABLE (a run folder or a Step Law CSV)."""
    from sweeper.cli.running import fail, load_or_exit
    from sweeper.replay import run_replay
    from sweeper.sweep import SweepError

    if budget is not None and not 0 < budget <= 1:
        fail(f"--budget must be in (0, 1], got {budget:g}")
    recipe = load_or_exit(recipe_path) if recipe_path else None
    try:
        report = run_replay(table, out, recipe=recipe, search=search, budget=budget, seed=seed,
                            size_column=size_column)
    except (SweeperError, SweepError) as error:
        fail(str(error), code=error.exit_code)
        raise AssertionError("unreachable")
    click.echo(f"replayed {table} ({search}): {report.trials_run} of {report.recorded_points} recorded runs "
               f"({report.runs_fraction:.1%}) in {report.wall_seconds:.1f}s -> {out}")
    if report.missing:
        click.echo(f"warning: {len(report.missing)} proposal(s) not in the table (failed, listed in "
                   f"{out}/replay.json)", err=True)
    sys.exit(0)


COMMANDS = [replay]
