"""Probe a slice of a loss landscape: one model shape and batch, a few learning rates, token
budgets, seeds and warmups, trained as fused groups in this process (no Ray).

The measured facts behind recipes/demo.yaml (docs/demo.md) were taken with it, e.g.

    python benchmarks/landscape_probe.py --d-model 128 --seq-len 64 --batch 16 --tokens 409600 \
        --lrs 2e-3,4e-3,8e-3,1.6e-2 --warmup-steps 20,80 --seeds 0,1

prints one JSON line per run (shape, N, D, B, lr, warmup, seed, steps, status, loss) and, last,
one JSON object with the CPU seconds spent per fused group. Validation uses --val-batches
batches (128 for the figures; the recipes use 8, which adds a near-constant offset).
"""

from __future__ import annotations

import argparse
import json
import time

from sweeper.plan import make_trial, plan_cells
from sweeper.recipe import parse_recipe
from sweeper.train import data_identity
from sweeper.train.fused import run_fused


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, required=True)
    parser.add_argument("--n-layers", type=int, default=2)
    parser.add_argument("--n-heads", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--batch", type=int, required=True, help="sequences per step")
    parser.add_argument("--tokens", type=floats, required=True, help="budgets D, comma-separated")
    parser.add_argument("--lrs", type=floats, required=True, help="peak lrs, comma-separated")
    parser.add_argument("--warmup-steps", type=ints, default=[100], help="warmup counts, comma-separated")
    parser.add_argument("--seeds", type=ints, default=[0])
    parser.add_argument("--val-batches", type=int, default=8)
    args = parser.parse_args()

    groups = []
    for warmup in args.warmup_steps:
        for seed in args.seeds:
            recipe = parse_recipe(
                {
                    "name": "probe",
                    "models": [
                        {
                            "d_model": args.d_model,
                            "n_layers": args.n_layers,
                            "n_heads": args.n_heads,
                            "seq_len": args.seq_len,
                        }
                    ],
                    "tokens": {"absolute": args.tokens},
                    "learning_rates": {"values": args.lrs},
                    "batch_sizes": [args.batch],
                    "schedule": {"kind": "cosine", "warmup_steps": warmup, "min_lr_ratio": 0.1},
                    "evaluation": {"every_steps": 0, "val_batches": args.val_batches},
                    "seeds": [seed],
                }
            )
            identity = data_identity(recipe.data)
            specs = [
                make_trial(recipe, cell, lr, args.batch, seed, identity)
                for cell in plan_cells(recipe)
                for lr in args.lrs
            ]
            # The fused trainer takes at most 8 members per group (the driver's own limit).
            for start in range(0, len(specs), 8):
                chunk = specs[start : start + 8]
                cpu = time.process_time()
                outcomes = {o.trial_id: o for o in run_fused(chunk)}
                groups.append(round(time.process_time() - cpu, 2))
                for spec in chunk:
                    outcome = outcomes[spec.trial_id]
                    print(
                        json.dumps(
                            {
                                "shape": spec.shape.name,
                                "n_params": spec.n_params,
                                "tokens": spec.tokens_budget,
                                "batch": args.batch,
                                "lr": spec.lr,
                                "warmup_steps": spec.warmup_steps,
                                "seed": seed,
                                "steps": spec.steps,
                                "status": outcome.status,
                                "loss": round(outcome.final_val_loss, 4),
                            }
                        ),
                        flush=True,
                    )
    print(json.dumps({"cpu_seconds_per_group": groups}))


if __name__ == "__main__":
    main()
