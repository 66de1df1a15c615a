"""Sample efficiency: runs used vs held-out regret, law-guided search vs full grid vs random.

    .venv/bin/python benchmarks/sample_efficiency.py [--quick] [--budget 0.25] [--estimator smooth]

Tables: Step Law's released MoE sweep (../shared/data/steplaw, N = active parameters,
smooth loss), and synthetic landscapes with known laws (asymmetric in lr, 0.05% noise). For
each table:

* full grid: leave-one-cell-out regret of the laws fitted on every run (``fit --evaluate``);
* adaptive: ``sweeper replay --search adaptive --budget B`` (the real driver, Optuna study and
  Parquet sink, answered from the table), then the same held-out regret of the laws fitted on
  the runs it chose;
* random: as many runs drawn uniformly from the table (mean over ``--repeats`` draws).

Regret is always scored on the *full* table's landscape of the held-out cell (thin-plate
interpolation of all its runs, sweeper.fit.evaluate): the subset only decides the laws. A cell
the subset could not fit (too few runs) is predicted by the laws of all the subset's cells.
On synthetic tables the fitted exponents are also compared with the true ones and with the
full grid's 95% intervals. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from sweeper.fit import clean_trials, fit_sweep
from sweeper.fit.data import FitError, Sweep
from sweeper.fit.evaluate import Landscape
from sweeper.replay import run_replay
from sweeper.results import ResultSink, read_trials
from sweeper.results.schema import TRIALS_SCHEMA

STEPLAW = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "steplaw" / "moe_lr_bs_loss.csv"
SEQ_LEN = 256
TRUE_LAW = {"alpha": -0.45, "beta": 0.12, "gamma": 0.45}  # lr* = 0.5 N^alpha D^beta, B* = 3 D^gamma


def synthetic_rows(seed: int, noise: float = 5e-4) -> list[dict]:
    """4 N x 4 D cells, a 9 x 6 lr x B grid each (log steps 0.35 and 0.69) placed at random
    around the true optimum; log loss quadratic, 3x steeper above the optimal lr."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in (1e6, 3e6, 1e7, 3e7):
        for d in (1e8, 3e8, 1e9, 3e9):
            x_star = math.log(0.5 * n ** TRUE_LAW["alpha"] * d ** TRUE_LAW["beta"])
            y_star = math.log(3.0 * d ** TRUE_LAW["gamma"])
            lrs = np.exp(x_star + rng.uniform(-0.3, 0.3) + 0.35 * np.arange(-4, 5))
            batches = sorted(
                {
                    max(1, round(math.exp(y_star + rng.uniform(-0.3, 0.3) + 0.69 * k) / SEQ_LEN))
                    for k in range(-3, 3)
                }
            )
            for lr in lrs:
                for batch in batches:
                    dx, dy = math.log(lr) - x_star, math.log(batch * SEQ_LEN) - y_star
                    loss = (2.0 + 30 * n**-0.3) * math.exp(
                        0.02 * dx * dx * (3.0 if dx > 0 else 1.0) + 0.01 * dy * dy
                    )
                    rows.append(
                        {
                            "trial_id": f"s{seed}-{len(rows)}",
                            "sweep": f"synthetic{seed}",
                            "cell_id": f"N{n:.0e}-D{d:.0e}",
                            "n_params": int(n),
                            "tokens_budget": int(d),
                            "seq_len": SEQ_LEN,
                            "lr": float(f"{lr:.5g}"),
                            "batch_size": batch,
                            "batch_size_tokens": batch * SEQ_LEN,
                            "status": "complete",
                            "schedule": "cosine",
                            "loss": loss * (1.0 + noise * rng.standard_normal()),
                        }
                    )
    return rows


def steplaw_rows() -> list[dict]:
    from sweeper.execute.replay import read_table_rows

    return read_table_rows(STEPLAW, size_column="Na")


def to_sweep(rows: list[dict]) -> Sweep:
    return clean_trials(
        pa.Table.from_pylist(
            [{name: row.get(name) for name in TRIALS_SCHEMA.names} for row in rows], schema=TRIALS_SCHEMA
        )
    )


def heldout_regret(subset: list[dict], full: Sweep, estimator: str) -> np.ndarray | None:
    """Per cell of ``full``: regret on its full landscape of the laws fitted on ``subset``
    without that cell (or, for a cell the subset could not fit, on all the subset's cells)."""
    try:
        sweep = to_sweep(subset)
        fit = fit_sweep(sweep, estimator, n_bootstrap=0)
    except FitError:
        return None
    log_lr, log_b, ok = fit.estimator.holdout(sweep, fit)
    held = {(c.n_params, c.tokens): (log_lr[i], log_b[i]) for i, c in enumerate(sweep.cells) if ok[i]}
    regrets = []
    for cell in full.cells:
        point = held.get((cell.n_params, cell.tokens))
        if point is None:
            x_lr = np.array(
                [1.0]
                + [
                    {"N": math.log(cell.n_params), "D": math.log(cell.tokens)}[v]
                    for v in fit.lr_law.variables
                ]
            )
            x_b = np.array([1.0] + [math.log(cell.tokens) for _ in fit.batch_law.variables])
            point = (float(fit.lr_law.coef @ x_lr), float(fit.batch_law.coef @ x_b))
        # As ``fit --evaluate`` scores it: below the best measured run counts as 0.
        regrets.append(max(0.0, Landscape(cell).raw_regret(*point)[0]))
    return np.array(regrets)


def exponents(rows: list[dict], estimator: str, n_bootstrap: int = 0) -> dict:
    fit = fit_sweep(to_sweep(rows), estimator, n_bootstrap=n_bootstrap)
    out = {
        "alpha": float(fit.lr_law.coef[1]),
        "beta": float(fit.lr_law.coef[2]),
        "gamma": float(fit.batch_law.coef[1]),
    }
    if n_bootstrap:
        for name, law, k in (("alpha", fit.lr_law, 1), ("beta", fit.lr_law, 2), ("gamma", fit.batch_law, 1)):
            out[f"{name}_interval"] = [float(v) for v in np.percentile(law.bootstrap[:, k], [2.5, 97.5])]
    return out


def replay_subset(rows: list[dict], budget: float, scratch: Path, name: str) -> tuple[list[dict], float, int]:
    table = scratch / f"{name}-table"
    if not table.exists():
        ResultSink(table).record_rows(rows, "table")
    out = scratch / f"{name}-adaptive-{budget:g}"
    started = time.perf_counter()
    report = run_replay(table, out, search="adaptive", budget=budget)
    seconds = time.perf_counter() - started
    chosen = [r for r in read_trials(out).table.to_pylist() if r["status"] == "complete"]
    return chosen, seconds, len(report.missing)


def evaluate_table(
    name: str, rows: list[dict], budget: float, estimator: str, repeats: int, scratch: Path, seed: int = 0
) -> dict:
    full = to_sweep(rows)
    full_regret = heldout_regret(rows, full, estimator)
    assert full_regret is not None
    chosen, seconds, missing = replay_subset(rows, budget, scratch, name)
    adaptive = heldout_regret(chosen, full, estimator)
    rng = np.random.default_rng(seed)
    random_means, random_worsts, random_failed = [], [], 0
    for _ in range(repeats):
        picked = [rows[i] for i in rng.choice(len(rows), size=len(chosen), replace=False)]
        regret = heldout_regret(picked, full, estimator)
        if regret is None:
            random_failed += 1
            continue
        random_means.append(float(regret.mean()))
        random_worsts.append(float(regret.max()))
    result = {
        "table": name,
        "runs_table": full.n_runs,
        "runs_adaptive": len(chosen) + missing,
        "runs_fraction": (len(chosen) + missing) / full.n_runs,
        "missing_proposals": missing,
        "replay_seconds": round(seconds, 2),
        "regret_mean_full": float(full_regret.mean()),
        "regret_worst_full": float(full_regret.max()),
        "regret_mean_adaptive": float(adaptive.mean()) if adaptive is not None else None,
        "regret_worst_adaptive": float(adaptive.max()) if adaptive is not None else None,
        "regret_mean_random": float(np.mean(random_means)) if random_means else None,
        "regret_worst_random": float(np.mean(random_worsts)) if random_worsts else None,
        "random_draws_unfittable": random_failed,
    }
    if name.startswith("synthetic"):
        full_fit = exponents(rows, estimator, n_bootstrap=1000)
        adaptive_fit = exponents(chosen, estimator, n_bootstrap=1000)
        result["exponents_true"] = TRUE_LAW
        result["exponents_full"] = full_fit
        result["exponents_adaptive"] = adaptive_fit
        result["adaptive_exponents_within_full_intervals"] = all(
            full_fit[f"{k}_interval"][0] <= adaptive_fit[k] <= full_fit[f"{k}_interval"][1] for k in TRUE_LAW
        )
        result["true_exponents_within_adaptive_intervals"] = all(
            adaptive_fit[f"{k}_interval"][0] <= v <= adaptive_fit[f"{k}_interval"][1]
            for k, v in TRUE_LAW.items()
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one synthetic table, 5 random draws")
    parser.add_argument("--budget", type=float, default=0.25, help="adaptive: share of the table's runs")
    parser.add_argument("--estimator", default="smooth", choices=["smooth", "plateau"])
    parser.add_argument(
        "--repeats", type=int, default=None, help="random draws per table (default 20; quick 5)"
    )
    args = parser.parse_args()
    repeats = args.repeats or (5 if args.quick else 20)
    tables = [("steplaw-moe", steplaw_rows())] if STEPLAW.is_file() else []
    tables += [(f"synthetic{seed}", synthetic_rows(seed)) for seed in range(1 if args.quick else 3)]
    # tmpfs when there is one: the replay's journal and Parquet writes fsync every trial.
    scratch_root = "/dev/shm" if os.path.isdir("/dev/shm") else None
    results = []
    with tempfile.TemporaryDirectory(dir=scratch_root) as scratch:
        for name, rows in tables:
            result = evaluate_table(name, rows, args.budget, args.estimator, repeats, Path(scratch))
            results.append(result)
            print(
                f"{name}: {result['runs_adaptive']}/{result['runs_table']} runs ({result['runs_fraction']:.1%}),"
                f" replay {result['replay_seconds']}s; held-out regret mean/worst (%):"
                f" full {100 * result['regret_mean_full']:.4f}/{100 * result['regret_worst_full']:.4f},"
                f" adaptive {_pct(result['regret_mean_adaptive'])}/{_pct(result['regret_worst_adaptive'])},"
                f" random {_pct(result['regret_mean_random'])}/{_pct(result['regret_worst_random'])}"
                f" (mean of {repeats} draws, {result['random_draws_unfittable']} unfittable)",
                flush=True,
            )
            if "exponents_adaptive" in result:
                print(
                    f"  exponents true {TRUE_LAW}; full {_short(result['exponents_full'])};"
                    f" adaptive {_short(result['exponents_adaptive'])}; adaptive within full intervals:"
                    f" {result['adaptive_exponents_within_full_intervals']}",
                    flush=True,
                )
    headline = results[0]
    print(
        json.dumps(
            {
                "estimator": args.estimator,
                "budget": args.budget,
                "table": headline["table"],
                "runs_fraction": headline["runs_fraction"],
                "regret_mean_adaptive": headline["regret_mean_adaptive"],
                "regret_mean_full": headline["regret_mean_full"],
                "regret_worst_adaptive": headline["regret_worst_adaptive"],
                "regret_worst_full": headline["regret_worst_full"],
                "regret_mean_random": headline["regret_mean_random"],
                "tables": results,
            }
        )
    )


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.4f}"


def _short(fit: dict) -> str:
    return ", ".join(
        f"{k} {fit[k]:+.3f}"
        + (
            f" [{fit[k + '_interval'][0]:+.3f}, {fit[k + '_interval'][1]:+.3f}]"
            if k + "_interval" in fit
            else ""
        )
        for k in TRUE_LAW
    )


if __name__ == "__main__":
    main()
