"""CLI: ``sweeper replay`` -- a sweep answered from a recorded table (see sweeper/replay.py)."""

from __future__ import annotations

import sys

import click

from sweeper.cli.common import fail


@click.command()
@click.argument("table", type=click.Path())
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Run folder to write.")
@click.option(
    "--recipe",
    "recipe_path",
    type=click.Path(dir_okay=False),
    help="Replay this recipe's ladder and grid (default: the table's own cells and values).",
)
@click.option(
    "--search",
    type=click.Choice(["grid", "adaptive"]),
    default="adaptive",
    show_default=True,
    help="grid: every recorded point; adaptive: the law-guided sampler.",
)
@click.option(
    "--budget",
    type=float,
    help="adaptive: at most this share of the table's runs (default: the recipe's search.budget, 0.25).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Sampler seed.")
@click.option(
    "--size-column",
    default="N",
    show_default=True,
    help="Step Law CSV: the column of the law's model size (Na for MoE tables).",
)
def replay(
    table: str,
    out: str,
    recipe_path: str | None,
    search: str,
    budget: float | None,
    seed: int,
    size_column: str,
) -> None:
    """Run a sweep whose trials are answered from TABLE (a run folder or a Step Law CSV)."""
    from sweeper.recipe import load_recipe
    from sweeper.replay import run_replay

    if budget is not None and not 0 < budget <= 1:
        fail(f"--budget must be in (0, 1], got {budget:g}")
    recipe = load_recipe(recipe_path) if recipe_path else None
    # A table or recipe that cannot be replayed raises SweeperError: main prints it (exit 2).
    report = run_replay(
        table, out, recipe=recipe, search=search, budget=budget, seed=seed, size_column=size_column
    )
    click.echo(
        f"replayed {table} ({search}): {report.trials_run} of {report.recorded_points} recorded runs "
        f"({report.runs_fraction:.1%}) in {report.wall_seconds:.1f}s -> {out}"
    )
    if report.missing:
        click.echo(
            f"warning: {len(report.missing)} proposal(s) not in the table (failed, listed in "
            f"{out}/replay.json)",
            err=True,
        )
    sys.exit(0)


COMMANDS = [replay]
