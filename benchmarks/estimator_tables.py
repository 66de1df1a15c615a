"""Held-out regret of every estimator on synthetic landscapes with known laws.

Each table is written through the real ResultSink and fitted as `sweeper fit --evaluate`
would (200 bootstrap replicates); prints mean and worst leave-one-cell-out regret per
estimator, what `auto` chose, and for the estimators with N-D laws whether each true exponent
(alpha, beta, gamma) lies inside its 95% interval and the widest interval; the last line is
one JSON object. Run from the repository root:
``PYTHONPATH=. .venv/bin/python benchmarks/estimator_tables.py``
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from sweeper.fit import load_sweep
from sweeper.fit.auto import build_auto_report
from tests.fit.synthetic import Truth, synthetic_rows, write_run

TABLES = {
    "synthetic symmetric (noise 2e-4)": {},
    "synthetic asymmetric 3x (noise 5e-4)": {"asymmetry": 3.0, "noise": 5e-4, "seed": 1},
    "synthetic lr-B ridge (k_xy 0.01, noise 5e-4)": {"k_xy": 0.01, "noise": 5e-4, "seed": 2},
    "synthetic coarse grid 2x steps (noise 1e-3)": {
        "lr_step": 2.0,
        "b_step": 2.0,
        "n_lr": 7,
        "n_b": 5,
        "noise": 1e-3,
        "seed": 3,
    },
}


def exponent_coverage(fit) -> dict:
    """How many of the true alpha, beta, gamma lie inside the fit's 95% intervals."""
    truth = Truth()
    pairs = [(fit.lr_law, truth.alpha, 1), (fit.lr_law, truth.beta, 2), (fit.batch_law, truth.gamma, 1)]
    intervals = [law.interval()[k] for law, _, k in pairs]
    inside = sum(low <= true <= high for (low, high), (_, true, _) in zip(intervals, pairs))
    return {"inside": int(inside), "widest": float(max(high - low for low, high in intervals))}


def main() -> None:
    results = {}
    for name, options in TABLES.items():
        run = write_run(Path(tempfile.mkdtemp()) / "run", synthetic_rows(Truth(), **options))
        sweep, _ = load_sweep(run)
        report = build_auto_report(sweep, n_bootstrap=200, seed=0, loss_law=False)
        figures = {est: {"mean": ev.mean, "worst": ev.worst} for est, ev in report.evaluations.items()}
        coverage = {est: exponent_coverage(fit) for est, fit in report.fits.items() if est != "compute"}
        results[name] = {"chosen": report.estimator, "regret": figures, "exponents": coverage}
        cells = ", ".join(f"{est} {f['mean']:.3%} / {f['worst']:.3%}" for est, f in figures.items())
        print(f"{name}: {cells}; auto -> {report.estimator}")
        for est, c in coverage.items():
            print(
                f"    {est}: {c['inside']}/3 true exponents inside the 95% intervals, widest {c['widest']:.3f}"
            )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
