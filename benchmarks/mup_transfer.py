"""Does the optimal learning rate transfer across widths? The same ladder swept in the standard
parametrization and in μP, each fitted with the project's own fitter.

    .venv/bin/python benchmarks/mup_transfer.py [--quick] [--out DIR] [--estimator plateau]

The ladder: widths 32, 64, 128 (2 layers, 4 heads, seq 32, byte-level, the builtin corpus),
two token budgets, two batch sizes, a log grid of learning rates (9 points from 1e-3 to 0.3;
7 with --quick), each run on a local Ray exactly as ``sweeper submit`` runs it (μP's base
width is the smallest width, where both parametrizations are the same model). For each
parametrization it prints the fitted lr law's N-exponent alpha with its 95% interval, the
spread of the optimal lr across widths (largest / smallest best lr among the cells of one
budget), and the best loss of every cell. μP should give alpha near 0 and a small spread;
the standard parametrization a negative alpha. The table is what it is on this ladder: small
widths and short runs are where μP's asymptotics hold least.

The last line is one JSON object: alpha and its interval per parametrization, the lr spread,
and the best losses. Runs on CPU or any CUDA machine (set ``--gpus 0.25`` to share a GPU).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path
from typing import Any

from sweeper.fit import fit_run
from sweeper.recipe import parse_recipe
from sweeper.sweep import run_sweep

WIDTHS = (32, 64, 128)


def ladder(parametrization: str, quick: bool, gpus: float) -> dict[str, Any]:
    return {
        "name": f"mup-transfer-{parametrization}",
        "models": [{"d_model": width, "n_layers": 2, "n_heads": 4, "seq_len": 32} for width in WIDTHS],
        "tokens": {"absolute": [20000, 60000]},
        "learning_rates": {"grid": {"min": 1e-3, "max": 0.3, "count": 7 if quick else 9}},
        "batch_sizes": [4, 8],
        "schedule": {"kind": "cosine", "warmup_steps": 20, "min_lr_ratio": 0.1},
        "evaluation": {"val_batches": 16},
        "data": {"source": "builtin", "max_bytes": 1000000},
        "parametrization": parametrization,
        "resources": {"cpus": 1, "gpus": gpus},
    }


def measure(parametrization: str, out: Path, quick: bool, estimator: str, gpus: float) -> dict[str, Any]:
    recipe = parse_recipe(ladder(parametrization, quick, gpus))
    run_dir = out / recipe.name
    summary = run_sweep(recipe, run_dir)
    report = fit_run(run_dir, estimator=estimator, n_bootstrap=500, plots=False, loss_law=False)
    document = report.document()
    law = document["lr_law"]
    cells = document["cells"]
    spreads = []
    for tokens in sorted({cell["tokens"] for cell in cells}):
        best = [cell["best_lr"] for cell in cells if cell["tokens"] == tokens]
        spreads.append(max(best) / min(best))
    return {
        "trials": summary.planned,
        "alpha": law["coefficients"]["alpha"],
        "alpha_interval": law["intervals"]["alpha"],
        "lr_spread_across_widths": max(spreads),
        "cells": [
            {
                "cell": cell["cell_id"],
                "best_loss": cell["best_loss"],
                "best_lr": cell["best_lr"],
                "edge": any("EDGE" in flag for flag in cell["flags"]),
            }
            for cell in cells
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="7 learning rates instead of 9")
    parser.add_argument(
        "--out", type=Path, default=None, help="where the two run folders go (default: a temp dir)"
    )
    parser.add_argument("--estimator", default="plateau", help="the fitter's estimator for alpha")
    parser.add_argument("--gpus", type=float, default=0.0, help="GPUs per trial (fractions share a GPU)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="mup-transfer-"))
    results = {
        kind: measure(kind, out, args.quick, args.estimator, args.gpus) for kind in ("standard", "mup")
    }

    print(f"{'parametrization':<16} {'alpha':>8}  {'95% interval':<22} {'lr spread':>9}  (trials)")
    for kind, result in results.items():
        low, high = result["alpha_interval"]
        print(
            f"{kind:<16} {result['alpha']:>8.3f}  [{low:>8.3f}, {high:>8.3f}]  "
            f"{result['lr_spread_across_widths']:>8.2f}x  ({result['trials']})"
        )
    print(f"\n{'cell':<34} {'standard best loss (lr)':<26} {'mup best loss (lr)':<26}")
    for standard, mup in zip(results["standard"]["cells"], results["mup"]["cells"]):

        def show(cell: dict[str, Any]) -> str:
            return f"{cell['best_loss']:.4f} ({cell['best_lr']:.3g}){' EDGE' if cell['edge'] else ''}"

        print(f"{standard['cell'].replace('mup-transfer-', ''):<34} {show(standard):<26} {show(mup):<26}")
    print(
        json.dumps(
            {
                "alpha_standard": results["standard"]["alpha"],
                "alpha_standard_interval": results["standard"]["alpha_interval"],
                "alpha_mup": results["mup"]["alpha"],
                "alpha_mup_interval": results["mup"]["alpha_interval"],
                "lr_spread_standard": results["standard"]["lr_spread_across_widths"],
                "lr_spread_mup": results["mup"]["lr_spread_across_widths"],
                "best_loss_standard": [cell["best_loss"] for cell in results["standard"]["cells"]],
                "best_loss_mup": [cell["best_loss"] for cell in results["mup"]["cells"]],
                "mean_best_loss_ratio_mup_over_standard": math.exp(
                    sum(
                        math.log(m["best_loss"] / s["best_loss"])
                        for s, m in zip(results["standard"]["cells"], results["mup"]["cells"])
                    )
                    / len(results["mup"]["cells"])
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
