"""``sweeper replay``: a sweep whose trials are answered from a recorded table.

The plan comes from the table (or a recipe), the executor is ``execute.replay.ReplayExecutor``,
and everything else is the real sweep's: the driver loop (``sweep.run_sweep``), the Optuna
study in the run folder, the Parquet sink. The run folder is therefore like any sweep's
(``status`` and ``fit --evaluate`` apply), plus ``replay.json``: what was replayed, how many
of the table's runs the search used, and the proposals the table could not answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeper.execute.replay import (
    ReplayExecutor,
    ReplayPlan,
    read_table_rows,
    recipe_plan,
    sweep_name,
    table_plan,
    table_recipe,
)
from sweeper.plan import fused_group_size
from sweeper.recipe import Recipe, Search
from sweeper.runfolder import atomic_write_json
from sweeper.sweep import SweepSummary, planned_trials, run_trials, study_opener

REPLAY_FILE = "replay.json"


@dataclass
class ReplayReport:
    run_dir: Path
    search: str
    recorded_points: int  # grid points the table (or the recipe's grid, matched) records
    trials_run: int  # trials of the replayed sweep in the run folder
    missing: list[str] = field(default_factory=list)  # proposals the table lacks
    wall_seconds: float = 0.0
    summary: SweepSummary | None = None

    @property
    def runs_fraction(self) -> float:
        return self.trials_run / self.recorded_points if self.recorded_points else 0.0

    def document(self, table: str, budget: float | None, seed: int) -> dict[str, Any]:
        return {
            "kind": "sweeper.replay",
            "table": table,
            "search": self.search,
            "budget": budget,
            "seed": seed,
            "recorded_points": self.recorded_points,
            "trials_run": self.trials_run,
            "runs_fraction": self.runs_fraction,
            "missing": len(self.missing),
            "missing_trials": self.missing[:100],
            "wall_seconds": self.wall_seconds,
        }


def run_replay(
    table: str | Path,
    out: str | Path,
    *,
    recipe: Recipe | None = None,
    search: str = "adaptive",
    budget: float | None = None,
    seed: int = 0,
    size_column: str = "N",
    capacity: int = 8,
    on_trial: Callable | None = None,
) -> ReplayReport:
    """Replay ``table`` (run folder or Step Law CSV) into ``out`` with the grid or the
    law-guided search (``budget``: share of the table's runs; default the recipe's, 0.25).
    Raises ReplayError (exit 2) on a table that cannot be replayed."""
    started = time.time()
    rows = read_table_rows(table, size_column=size_column)
    base = recipe.search if recipe is not None else Search()
    settings = base.model_copy(update={"kind": search, **({"budget": budget} if budget is not None else {})})
    settings = Search.model_validate(settings.model_dump())  # re-checks the budget's range
    plan: ReplayPlan
    if recipe is not None:
        run_recipe = recipe.model_copy(update={"search": settings})
        plan = recipe_plan(rows, run_recipe)
    else:
        run_recipe = table_recipe(sweep_name(table), settings)
        plan = table_plan(rows, run_recipe.name, settings)
    executor = ReplayExecutor(plan.answers, slots=capacity)
    out = Path(out)
    opener = study_opener(
        run_recipe, plan.specs, out, grid_runs=plan.grid_runs, cell_sizes=plan.cell_sizes, seed=seed
    )
    # The real driver loop; only the executor differs (and no recipe is saved: `sweeper
    # resume` must not train a replay's placeholder shapes).
    summary = run_trials(
        run_recipe,
        out,
        plan.specs,
        opener,
        members=fused_group_size(run_recipe, plan.specs),
        planned=planned_trials(run_recipe, plan.grid_runs),
        executor=executor,
        on_trial=on_trial,
    )
    planned_ids = {spec.trial_id for spec in plan.specs}
    from sweeper.results import read_trials

    trials_run = sum(
        1 for trial_id in read_trials(out).table.column("trial_id").to_pylist() if trial_id in planned_ids
    )
    report = ReplayReport(
        out, search, plan.recorded_points, trials_run, executor.missing, time.time() - started, summary
    )
    atomic_write_json(
        out / REPLAY_FILE,
        report.document(str(table), settings.budget if search == "adaptive" else None, seed),
    )
    return report
