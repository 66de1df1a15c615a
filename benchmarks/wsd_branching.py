"""WSD branching: every token budget of a run from one training, against each budget alone.

A WSD ladder of 4 budgets (1, 2, 4, 8 units of steps, 10% decay, fixed warmup) at two
learning rates, trained three ways on the CPU, one thread:

- unbranched: each budget on its own (``run_trial`` per trial, what a sweep runs unfused),
- unbranched fused: the budgets of both learning rates as one fused group without forks
  (what ``fuse: auto`` runs on small CPU batches),
- branched: ``run_branched`` (each run's longest budget once, every shorter budget's decay
  as a fork from it; both learning rates in one stack).

``max_loss_diff`` compares the branched budgets with the same budgets through the same
trainer unbranched (the fused group); ``max_loss_diff_vs_single`` with ``run_trial``, which
differs from the fused trainer by batched-matmul rounding whether or not it branches.

Tokens trained are counted where they are spent: optimizer updates x batch tokens (every
stack row an update touches counts). The expected branched count is
D_k + decay x (D_1 + ... + D_{k-1}) per run. Losses: each budget's final validation loss,
branched against both unbranched runs. Wall times are measured in this run, so the ratios
hold under load that the absolute seconds do not.

    python benchmarks/wsd_branching.py [--quick] [--repeats 3]

Last line: one JSON object (tokens_ratio, wall_ratio, max_loss_diff, ...).
"""

from __future__ import annotations

import argparse
import json
import time

from sweeper.plan import plan_trials
from sweeper.recipe import parse_recipe
from sweeper.train import data_identity, run_trial
from sweeper.train import fused as fused_module
from sweeper.train.branching import run_branched
from sweeper.train.fused import run_fused

DECAY = 0.1
UNITS = [1, 2, 4, 8]


def ladder(unit_steps: int, batch: int, seq_len: int) -> list:
    recipe = parse_recipe(
        {
            "name": "wsd-bench",
            "models": [{"d_model": 32, "n_layers": 2, "n_heads": 4, "seq_len": seq_len}],
            "tokens": {"absolute": [u * unit_steps * batch * seq_len for u in UNITS]},
            "learning_rates": {"values": [3e-3, 1e-2]},
            "batch_sizes": [batch],
            "schedule": {"kind": "wsd", "warmup_steps": max(1, unit_steps // 5), "decay_fraction": DECAY},
            "evaluation": {"every_steps": unit_steps, "val_batches": 8},
        }
    )
    return plan_trials(recipe, data_identity(recipe.data))


class UpdateCounter:
    """Counts the stack rows each StackedAdamW update touches (tokens = rows x batch)."""

    def __init__(self) -> None:
        self.rows = 0
        self._step = fused_module.StackedAdamW.step

    def __enter__(self) -> UpdateCounter:
        original, counter = self._step, self

        def counting(optimizer, lrs):  # noqa: ANN001
            counter.rows += len(lrs)
            return original(optimizer, lrs)

        fused_module.StackedAdamW.step = counting
        return self

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        fused_module.StackedAdamW.step = self._step


def timed(function, *args):  # noqa: ANN001, ANN002, ANN201
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="25-step unit instead of 100")
    parser.add_argument(
        "--repeats", type=int, default=3, help="interleaved rounds; the fastest of each counts"
    )
    args = parser.parse_args()
    unit_steps, batch, seq_len = (25 if args.quick else 100), 4, 64
    specs = ladder(unit_steps, batch, seq_len)
    batch_tokens = batch * seq_len
    run_trial(specs[0])  # warm the corpus cache and torch's kernels before anything is timed

    # Rounds of the three, interleaved, and the fastest of each: on a shared machine the
    # load moves within a run; every round trains the same (seeded) runs.
    walls: dict[str, list[float]] = {"alone": [], "fused": [], "branched": []}
    for _ in range(args.repeats):
        alone, wall = timed(lambda: [run_trial(spec) for spec in specs])
        walls["alone"].append(wall)
        with UpdateCounter() as counted:
            fused, wall = timed(run_fused, specs)
        walls["fused"].append(wall)
        tokens_fused = counted.rows * batch_tokens
        with UpdateCounter() as counted:
            branched, wall = timed(run_branched, specs)
        walls["branched"].append(wall)
        tokens_branched = counted.rows * batch_tokens
    tokens_alone = sum(outcome.steps_done for outcome in alone) * batch_tokens
    wall_alone, wall_fused, wall_branched = (min(walls[name]) for name in ("alone", "fused", "branched"))

    lrs = sorted({spec.lr for spec in specs})
    longest = max(spec.steps for spec in specs)
    # Tokens trained per run: D_k + decay x (D_1 + ... + D_{k-1}).
    expected_tokens = sum(s.steps if s.steps == longest else DECAY * s.steps for s in specs) * batch_tokens
    print(
        f"WSD ladder: d_model 32, batch {batch}x{seq_len}, budgets {[s.steps for s in specs[:: len(lrs)]]} steps, "
        f"decay {DECAY:.0%}, lrs {lrs}"
    )
    print(
        f"{'steps':>6} {'lr':>7} {'alone':>9} {'fused':>9} {'branched':>9} {'|b-alone|':>10} {'|b-fused|':>10}"
    )
    diffs_alone, diffs_fused = [], []
    for spec, a, f, b in zip(specs, alone, fused, branched):
        diffs_alone.append(abs(b.final_val_loss - a.final_val_loss))
        diffs_fused.append(abs(b.final_val_loss - f.final_val_loss))
        print(
            f"{spec.steps:>6} {spec.lr:>7.0e} {a.final_val_loss:>9.5f} {f.final_val_loss:>9.5f} "
            f"{b.final_val_loss:>9.5f} {diffs_alone[-1]:>10.2e} {diffs_fused[-1]:>10.2e}"
        )
    print(
        f"tokens trained: alone {tokens_alone:.4g}, fused {tokens_fused:.4g}, branched {tokens_branched:.4g} "
        f"(expected D_k + decay x sum of the others: {expected_tokens:.4g})"
    )
    print(
        f"wall (fastest of {args.repeats}): alone {wall_alone:.1f}s, fused {wall_fused:.1f}s, "
        f"branched {wall_branched:.1f}s; every round: {json.dumps({k: [round(w, 1) for w in v] for k, v in walls.items()})}"
    )
    print(
        json.dumps(
            {
                "quick": args.quick,
                "repeats": args.repeats,
                "tokens_ratio": round(tokens_branched / tokens_alone, 4),
                "tokens_vs_expected": round(tokens_branched / expected_tokens, 4),
                "wall_ratio": round(wall_branched / wall_alone, 3),
                "wall_ratio_vs_fused": round(wall_branched / wall_fused, 3),
                # Like for like: the same budgets through the same (fused) trainer without forks.
                "max_loss_diff": float(f"{max(diffs_fused):.3g}"),
                # Against run_trial: the fused trainer's own distance from the single path (batched
                # matmuls round differently, and high-lr, small-batch runs amplify it).
                "max_loss_diff_vs_single": float(f"{max(diffs_alone):.3g}"),
                "all_complete": all(o.status == "complete" for o in alone + fused + branched),
            }
        )
    )


if __name__ == "__main__":
    main()
