"""Train a recipe's whole plan on a local process pool, without Ray or Optuna: for measuring
candidate recipes' landscapes on a many-core machine that has torch, pydantic and pyarrow
but not the cluster stack.

    python benchmarks/recipe_pool.py recipes/demo.yaml --out /tmp/demo_pool --processes 16

Several recipes share one pool and one folder (give them one ``name``), e.g. one per model
size, each with its own grid: the longest tasks of all of them start first.

The trials are the recipe's own (``plan_trials``, same trial ids), grouped into fused tasks
by the sweep's own rule (``fused_group_size``/``whole_runs``: siblings of one shape, batch and
seed, in lr then budget order; a real sweep forms its groups in its seeded order, so
fused arithmetic may differ in the last digits), trained by the workers' code path
(``run_branched``) and recorded by the real ResultSink, so ``sweeper fit OUT`` reads the
folder like any sweep's. The last line is one JSON object: trials, CPU seconds spent in the
workers (the cost on a core of one's own) and wall seconds.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sweeper.outcome import TrialOutcome  # noqa: E402
from sweeper.plan import TrialSpec, fused_group_size, plan_trials, whole_runs  # noqa: E402
from sweeper.recipe import load_recipe  # noqa: E402
from sweeper.results.sink import ResultSink  # noqa: E402
from sweeper.train import data_identity  # noqa: E402
from sweeper.trainspec import budget_line_key, fusion_key  # noqa: E402


def run_group(specs: list[TrialSpec]) -> tuple[list[TrialSpec], list[TrialOutcome], float]:
    from sweeper.train.branching import run_branched

    started = time.process_time()
    outcomes = run_branched(specs, threads=1)
    return specs, outcomes, time.process_time() - started


def groups_of(recipe_paths: list[Path]) -> list[list[TrialSpec]]:
    groups = [group for path in recipe_paths for group in _recipe_groups(path)]
    # Longest tasks first, so the pool's tail is short. A step's cost grows about with the
    # width (measured on the demo: 2.3 ms at d_model 16, 8.7 ms at 72, 6 members, batch 16).
    return sorted(groups, key=lambda g: -max(s.steps * s.shape.d_model for s in g) * len(g) ** 0.5)


def _recipe_groups(recipe_path: Path) -> list[list[TrialSpec]]:
    recipe = load_recipe(recipe_path)
    specs = plan_trials(recipe, data_identity(recipe.data))
    members = whole_runs(fused_group_size(recipe, specs), specs)
    siblings: dict[object, list[TrialSpec]] = defaultdict(list)
    for spec in sorted(specs, key=lambda s: (s.lr, s.tokens_budget)):
        siblings[fusion_key(spec)].append(spec)
    groups: list[list[TrialSpec]] = []
    for family in siblings.values():
        size = members(family[0])
        # Whole runs (the budgets one WSD run branches into) stay in one group.
        lines: dict[object, list[TrialSpec]] = defaultdict(list)
        for spec in family:
            lines[budget_line_key(spec)].append(spec)
        group: list[TrialSpec] = []
        for line in lines.values():
            if group and len(group) + len(line) > size:
                groups.append(group)
                group = []
            group = group + line
        groups.append(group)
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--processes", type=int, default=mp.cpu_count())
    args = parser.parse_args()
    groups = groups_of(args.recipes)
    sink = ResultSink(args.out, max_buffered=256)
    started, cpu, trials = time.perf_counter(), 0.0, 0
    with mp.get_context("spawn").Pool(args.processes) as pool:
        for specs, outcomes, seconds in pool.imap_unordered(run_group, groups):
            cpu += seconds
            for spec, outcome in zip(specs, outcomes, strict=True):
                sink.record(spec, outcome)
                trials += 1
    sink.compact()
    print(
        json.dumps(
            {
                "recipes": [str(path) for path in args.recipes],
                "trials": trials,
                "groups": len(groups),
                "worker_cpu_seconds": cpu,
                "wall_seconds": time.perf_counter() - started,
            }
        )
    )


if __name__ == "__main__":
    main()
