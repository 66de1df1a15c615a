"""CPU time per step of a fused WSD group by its size K: the lr x budget family of one model
size, batch and seed trained as one task (K = lrs x 3 budgets), against part of it.

    python benchmarks/fused_family.py            # about a minute on one CPU core

For d_model 16 and 72 (2 layers, seq 16) at batches of 1 and 4 sequences, trains 2 and 6
learning rates x 3 budgets (K = 6 and 18) and prints the process CPU time per trunk step;
``per_member_ratio`` is the CPU per member of K = 18 over that of K = 6 (below 1: the
larger group is cheaper per trial). This is what sets plan.MAX_AUTO_MEMBERS. The last line
is one JSON object.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sweeper.plan import plan_trials  # noqa: E402
from sweeper.recipe import parse_recipe  # noqa: E402
from sweeper.train import data_identity  # noqa: E402
from sweeper.train.branching import run_branched  # noqa: E402

TRUNK_STEPS = 1200


def ms_per_trunk_step(d_model: int, batch: int, lrs: int) -> float:
    recipe = parse_recipe(
        {
            "name": "family",
            "models": [{"d_model": d_model, "n_layers": 2, "n_heads": 4, "seq_len": 16}],
            "tokens": {
                "absolute": [
                    16 * batch * TRUNK_STEPS // 4,
                    16 * batch * TRUNK_STEPS // 2,
                    16 * batch * TRUNK_STEPS,
                ]
            },
            "learning_rates": {"grid": {"min": 5e-4, "max": 1.6e-2, "count": lrs}},
            "batch_sizes": [batch],
            "schedule": {"kind": "wsd", "warmup_steps": 100, "decay_fraction": 0.2, "min_lr_ratio": 0.1},
            "evaluation": {"every_steps": 0, "val_batches": 8},
        }
    )
    specs = plan_trials(recipe, data_identity(recipe.data))
    started = time.process_time()
    run_branched(specs, threads=1)
    return 1000 * (time.process_time() - started) / TRUNK_STEPS


def main() -> None:
    rows = []
    for d_model in (16, 72):
        for batch in (1, 4):
            small, large = ms_per_trunk_step(d_model, batch, 2), ms_per_trunk_step(d_model, batch, 6)
            row = {
                "d_model": d_model,
                "batch_sequences": batch,
                "ms_per_step_k6": small,
                "ms_per_step_k18": large,
                "per_member_ratio": (large / 18) / (small / 6),
            }
            print(
                f"d{d_model} B{batch}: K=6 {small:.2f} ms/step, K=18 {large:.2f} ms/step, "
                f"per member {row['per_member_ratio']:.2f}x",
                flush=True,
            )
            rows.append(row)
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
