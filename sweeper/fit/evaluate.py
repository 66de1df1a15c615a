"""Held-out evaluation: leave one cell out, fit on the rest, score the prediction in that cell.

Regret of a prediction in cell c = L_c(lr_hat, B_hat) / min(measured losses of c) - 1, where
L_c is a thin-plate-spline RBF interpolation (scipy.interpolate.RBFInterpolator, exact
through the points, degree-1 polynomial tail) of the cell's non-diverged runs in
(log lr, log B), each axis scaled to the grid's span so both count alike. A predicted point
outside the cell's grid is clipped to the grid (the landscape is not measured beyond it;
``clipped`` says so), and an interpolated loss below the best measured one counts as zero
regret (the measurement cannot tell it from the best run).

Each estimator's ``holdout`` solves all folds as one batch (each fold is a weighting with
the held-out cell's observations set to zero); cell optima depend on their own cell only,
so they are not recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.interpolate import RBFInterpolator

from sweeper.fit.data import Cell, Sweep
from sweeper.fit.estimators import EstimatorFit

METHOD = (
    "leave-one-cell-out; regret from a thin-plate RBF of the held-out cell's landscape"
    " in (log lr, log B), prediction clipped to the cell's grid, negative regret -> 0"
)


class Landscape:
    """Smooth interpolation of one cell's measured loss over (log lr, log B)."""

    def __init__(self, cell: Cell):
        self.origin = np.array([cell.log_lr.min(), cell.log_batch.min()])
        self.span = np.array([np.ptp(cell.log_lr) or 1.0, np.ptp(cell.log_batch) or 1.0])
        points = (np.column_stack([cell.log_lr, cell.log_batch]) - self.origin) / self.span
        self.best = cell.best_loss
        self.rbf = RBFInterpolator(points, cell.loss, kernel="thin_plate_spline")

    def raw_regret(self, log_lr: float, log_batch: float) -> tuple[float, bool]:
        """Interpolated loss / best - 1 (may be negative), and whether the point was clipped
        to the grid."""
        unit = (np.array([log_lr, log_batch]) - self.origin) / self.span
        clipped_unit = np.clip(unit, 0.0, 1.0)
        value = float(self.rbf(clipped_unit[None, :])[0])
        return value / self.best - 1.0, bool(np.any(clipped_unit != unit))


@dataclass
class Evaluation:
    estimator: str
    per_cell: list[dict[str, Any]] = field(default_factory=list)

    @property
    def regrets(self) -> np.ndarray:
        return np.array([c["regret"] for c in self.per_cell if c["regret"] is not None])

    @property
    def n_evaluated(self) -> int:
        return int(self.regrets.size)

    @property
    def n_clipped_at_zero(self) -> int:
        return sum(1 for c in self.per_cell if c.get("regret_clipped_at_zero"))

    @property
    def mean(self) -> float:
        return float(self.regrets.mean()) if self.n_evaluated else float("nan")

    @property
    def median(self) -> float:
        return float(np.median(self.regrets)) if self.n_evaluated else float("nan")

    @property
    def worst(self) -> float:
        return float(self.regrets.max()) if self.n_evaluated else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": METHOD,
            "mean_regret": self.mean,
            "median_regret": self.median,
            "worst_regret": self.worst,
            "cells_evaluated": self.n_evaluated,
            "cells_clipped_at_zero": self.n_clipped_at_zero,
            "cells": self.per_cell,
        }


def landscapes(sweep: Sweep) -> list[Landscape]:
    """The cells' interpolated landscapes, built once per sweep (every estimator shares them)."""
    if "landscapes" not in sweep.cache:
        sweep.cache["landscapes"] = [Landscape(cell) for cell in sweep.cells]
    return sweep.cache["landscapes"]


def evaluate_estimator(sweep: Sweep, fit: EstimatorFit) -> Evaluation:
    """Leave-one-cell-out regret of one fitted estimator on its sweep."""
    log_lr, log_b, ok = fit.estimator.holdout(sweep, fit)
    evaluation = Evaluation(fit.name)
    for c, (cell, landscape) in enumerate(zip(sweep.cells, landscapes(sweep))):
        entry: dict[str, Any] = {
            "cell_id": cell.cell_id,
            "n_params": cell.n_params,
            "tokens": cell.tokens,
            "best_loss": cell.best_loss,
        }
        if not ok[c]:
            entry.update(regret=None, note="the other cells cannot determine the laws")
        else:
            raw, clipped = landscape.raw_regret(log_lr[c], log_b[c])
            entry.update(
                predicted_lr=float(np.exp(log_lr[c])),
                predicted_batch_size_tokens=float(np.exp(log_b[c])),
                regret=max(0.0, raw),
                clipped=clipped,
                # Below the best measured run: reported as 0, and said to be clipped.
                regret_clipped_at_zero=raw < 0.0,
                raw_regret=raw,
            )
        evaluation.per_cell.append(entry)
    return evaluation
