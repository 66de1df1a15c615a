"""Fit speed: 2,000 synthetic runs, 1,000 bootstrap resamples, every estimator, one core.

    .venv/bin/python benchmarks/fit_speed.py [--runs-per-cell 100] [--bootstrap 1000] [--repeats 5]

Goal: all estimators together under 1 s on one core. (Step Law's own tool takes
about 7 s on 2 cores for 1,911 runs and one estimator.) Times are wall-clock, best of
``--repeats`` (the machine may be shared; the median is printed too). Cleaning (Parquet-free:
from an in-memory Arrow table), the held-out evaluation and the loss law are timed apart.
The last line printed is one JSON object with every figure. Runs on any machine (CPU only:
the fitter never uses a GPU).
"""

from __future__ import annotations

import os

# One core: BLAS threads pinned before numpy loads.
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from sweeper.fit import ESTIMATORS, clean_trials, fit_sweep  # noqa: E402
from sweeper.fit.evaluate import evaluate_estimator  # noqa: E402
from sweeper.fit.losslaw import fit_loss_law  # noqa: E402
from sweeper.results.schema import TRIALS_SCHEMA  # noqa: E402


def synthetic_table(runs_per_cell: int, seed: int = 0) -> pa.Table:
    """4 model sizes x 5 token budgets; a sqrt(runs) x sqrt(runs) lr x B grid per cell around
    lr* = 0.5 N^-0.45 D^0.12, B* = 3 D^0.45, asymmetric quadratic log loss, 0.05% noise."""
    rng = np.random.default_rng(seed)
    side = int(round(math.sqrt(runs_per_cell)))
    columns: dict[str, list] = {name: [] for name in TRIALS_SCHEMA.names}
    for n in (1e6, 4e6, 1.6e7, 6.4e7):
        for d in (1e8, 3e8, 1e9, 3e9, 1e10):
            x_star = math.log(0.5 * n**-0.45 * d**0.12)
            y_star = math.log(3.0 * d**0.45)
            xs = x_star + rng.uniform(-0.2, 0.2) + np.linspace(-1.6, 1.6, side)
            ys = y_star + rng.uniform(-0.2, 0.2) + np.linspace(-1.6, 1.6, side)
            for x in xs:
                for y in ys:
                    dx, dy = x - x_star, y - y_star
                    curvature = 0.02 * (3.0 if dx > 0 else 1.0)
                    loss = (2.0 + 30 * n**-0.3) * math.exp(curvature * dx * dx + 0.01 * dy * dy)
                    loss *= 1.0 + 5e-4 * rng.standard_normal()
                    batch = max(1, round(math.exp(y) / 256))
                    values = {
                        "trial_id": f"t{len(columns['lr'])}",
                        "sweep": "bench",
                        "cell_id": f"N{n:.3g}-D{d:.3g}",
                        "seq_len": 256,
                        "n_params": int(n),
                        "flops_per_token": 6 * n,
                        "tokens_budget": int(d),
                        "lr": math.exp(x),
                        "batch_size": batch,
                        "batch_size_tokens": batch * 256,
                        "schedule": "cosine",
                        "status": "complete",
                        "loss": loss,
                    }
                    for name in TRIALS_SCHEMA.names:
                        columns[name].append(values.get(name))
    return pa.table(columns, schema=TRIALS_SCHEMA)


def timed(function, repeats: int) -> tuple[float, float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-per-cell", type=int, default=100)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    table = synthetic_table(args.runs_per_cell)
    clean_best, clean_median, sweep = timed(lambda: clean_trials(table), args.repeats)
    print(f"runs: {table.num_rows} in {len(sweep.cells)} cells; bootstrap resamples: {args.bootstrap}")
    print(f"{'cleaning':<28} best {clean_best:.3f} s   median {clean_median:.3f} s")
    figures: dict[str, object] = {
        "runs": table.num_rows,
        "cells": len(sweep.cells),
        "bootstrap": args.bootstrap,
        "cleaning_s": clean_best,
    }
    per_estimator = {}
    for name in ESTIMATORS:
        best, median, fit = timed(lambda: fit_sweep(sweep, name, n_bootstrap=args.bootstrap), args.repeats)
        per_estimator[name] = best
        print(
            f"{'fit + bootstrap: ' + name:<28} best {best:.3f} s   median {median:.3f} s"
            f"   ({len(fit.lr_law.bootstrap)} valid resamples)"
        )
    total = sum(per_estimator.values())
    print(f"{'all estimators':<28} {total:.3f} s  (target < 1 s on one core)")
    fits = {name: fit_sweep(sweep, name, n_bootstrap=0) for name in ESTIMATORS}

    def evaluate_all() -> list:
        sweep.cache.clear()  # rebuild the cells' RBF landscapes each time: part of the cost
        return [evaluate_estimator(sweep, f) for f in fits.values()]

    eval_best, _, _ = timed(evaluate_all, args.repeats)
    print(f"{'held-out evaluation (all)':<28} best {eval_best:.3f} s")
    loss_best, _, _ = timed(lambda: fit_loss_law(sweep, n_bootstrap=args.bootstrap), args.repeats)
    print(f"{'loss law + bootstrap':<28} best {loss_best:.3f} s")
    figures.update(
        {
            "fit_s": per_estimator,
            "all_estimators_s": total,
            "evaluation_s": eval_best,
            "loss_law_s": loss_best,
            "target_s": 1.0,
            "meets_target": total < 1.0,
            "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        }
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
