"""The fitter's one entry for a law-guided sampler: finished runs -> predicted optima of new cells.

The sampler (schedule/adaptive.py) hands plain rows, never a run folder, and gets back
(log lr, log B) per target with a bootstrap interval, or None when the finished cells cannot
determine the laws yet. Everything else (cleaning, estimators, laws, bootstrap) is the
fitter's own code, so a sweep is steered by exactly the laws ``sweeper fit`` would report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from sweeper.fit.data import FitError
from sweeper.fit.laws import PowerLawFit
from sweeper.fit.pipeline import fit_sweep
from sweeper.fit.registry import DEFAULT_ESTIMATOR
from sweeper.fit.select import clean_trials
from sweeper.results.schema import TRIALS_SCHEMA

# What a guiding row must carry (batch in tokens; status complete/diverged/failed).
GUIDE_COLUMNS = (
    "cell_id",
    "n_params",
    "tokens_budget",
    "seq_len",
    "lr",
    "batch_size_tokens",
    "loss",
    "status",
)


@dataclass(frozen=True)
class PredictedOptimum:
    """The laws' optimum at one (N, D): natural logs, with 95% bootstrap half-widths."""

    log_lr: float
    log_batch_tokens: float
    log_lr_halfwidth: float
    log_batch_halfwidth: float


def _law_value(law: PowerLawFit, coef: np.ndarray, log_n: float, log_d: float) -> np.ndarray:
    values = {"N": log_n, "D": log_d}
    x = np.array([1.0] + [values[v] for v in law.variables])
    return coef @ x


def predict_optima(
    rows: list[dict],
    targets: list[tuple[float, float]],
    *,
    estimator: str = DEFAULT_ESTIMATOR,
    n_bootstrap: int = 200,
    seed: int = 0,
) -> list[PredictedOptimum] | None:
    """Fit ``estimator``'s laws on ``rows`` (dicts with GUIDE_COLUMNS) and predict the optimum
    at each target (N, D). None when the rows cannot determine the laws (too few cells, one
    N or one D, singular design): the caller then falls back to its own search."""
    columns = {name: [row.get(name) for row in rows] for name in GUIDE_COLUMNS}
    table = pa.table(
        {
            field.name: pa.array(columns.get(field.name, [None] * len(rows)), field.type)
            for field in TRIALS_SCHEMA
        }
    )
    try:
        sweep = clean_trials(table)
        fit = fit_sweep(sweep, estimator, n_bootstrap=n_bootstrap, seed=seed)
    except FitError:
        return None
    if fit.lr_law.variables != ("N", "D") or fit.batch_law.variables != ("D",):
        return None  # a compute-based estimator needs FLOPs the rows do not carry
    predictions = []
    for n_params, tokens in targets:
        log_n, log_d = float(np.log(n_params)), float(np.log(tokens))
        centre, halves = [], []
        for law in (fit.lr_law, fit.batch_law):
            centre.append(float(_law_value(law, law.coef, log_n, log_d)))
            if law.bootstrap.shape[0] >= 20:
                spread = np.percentile(_law_value(law, law.bootstrap, log_n, log_d), [2.5, 97.5])
                halves.append(float(spread[1] - spread[0]) / 2.0)
            else:
                halves.append(float("nan"))
        predictions.append(PredictedOptimum(centre[0], centre[1], halves[0], halves[1]))
    return predictions
