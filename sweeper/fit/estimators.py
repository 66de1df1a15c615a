"""Estimators: how each cell's optimum is read off its runs, and how the laws are fitted to it.

Contract (`Estimator`): ``fit(sweep, rng, n_boot, cell_counts)`` returns an `EstimatorFit`
(lr law, batch law, each with bootstrap samples, and one optimum per cell);
``holdout(sweep, fit)`` returns, for every cell, the (log lr, log B) predicted by the laws
refitted without that cell. Cell-level bootstrap multiplicities come from the caller; the
estimator adds the run-level resampling. ``tests/fit/test_estimators.py`` holds the
conformance tests every estimator must pass.

* ``plateau`` -- Step Law (Li et al. 2025, arXiv 2503.04715, sec. 2, and its released
  ``code/fit_tool.py``): every run within 0.25% of its cell's best loss is a point of the
  fit, all points weighted equally, ordinary least squares in log space:
  lr = a N^alpha D^beta, B = c D^gamma (B in tokens).
* ``smooth`` -- per cell, a quadratic surface of log loss over (x, y) = (log lr, log B),
  weighted toward the minimum (Gaussian in the loss excess over the best run), gives a
  continuous argmin z_c and a curvature matrix H_c. Both laws are then fitted jointly by
  generalised least squares, minimising sum_c (z_hat_c - z_c)^T H_c (z_hat_c - z_c): the
  second-order loss penalty of missing each cell's optimum. H_c is the inverse of the
  argmin's uncertainty up to the noise level (a sharp minimum is located precisely, a flat
  one is not), and its lr-B cross term lets the fit use the lr-B ridge every such grid
  shows. Parabola fits around the minimum follow Hoffmann et al. 2022 (Chinchilla, approach
  2); interpolated optima on a lr x B grid, Porian et al. 2024 (arXiv 2406.19146, sec. 3).
* ``compute`` -- DeepSeek LLM (Bi et al. 2024, arXiv 2401.02954, sec. 3.1): the same
  near-optimal set (they keep runs within 0.25% of the best too), fitted as lr = a C^b and
  B = c C^d with C = M D, M the non-embedding FLOPs per token including attention
  (72 n_layer d_model^2 + 12 n_layer d_model seq_len, forward + backward).
* ``surface`` (surface.py) -- one robust fit of log loss over the runs near every cell's
  optimum, the curvature shared by all cells (log-linear in N and D, with the lr-B cross term
  and a steeper side per axis), each cell's optimum free; the laws by a random-effects GLS of
  those optima (Raudenbush 2009), so no precisely located cell sets a law no cell follows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sweeper.fit.data import Sweep
from sweeper.fit.laws import PowerLawFit, batched_wls, fit_power_law, resample_counts
from sweeper.fit.select import near_optimal_mask


@dataclass
class EstimatorFit:
    """One estimator's laws on one sweep. ``cell_optima``: one dict per cell with the
    optimum this estimator reads (lr, batch_size_tokens), near_optimal_runs, note."""

    estimator: Estimator
    lr_law: PowerLawFit
    batch_law: PowerLawFit
    cell_optima: list[dict[str, Any]]
    state: Any = None  # what ``holdout`` needs (estimator-specific)

    @property
    def name(self) -> str:
        return self.estimator.name


def cell_features(sweep: Sweep) -> dict[str, np.ndarray]:
    """Log-variables per cell: N, D and C = M * D (NaN where M is unknown)."""
    arrays = sweep.arrays()
    return {"N": arrays["log_n"], "D": arrays["log_d"], "C": arrays["log_c"]}


class Estimator:
    """Base class: subclasses set the class attributes and implement fit/holdout."""

    name: str = ""
    source: str = ""
    lr_variables: tuple[str, ...] = ("N", "D")
    batch_variables: tuple[str, ...] = ("D",)

    def available(self, sweep: Sweep) -> str | None:
        """None when this estimator can fit ``sweep``, else the reason it cannot."""
        return None

    def fit(
        self, sweep: Sweep, rng: np.random.Generator, n_boot: int, cell_counts: np.ndarray | None
    ) -> EstimatorFit:
        raise NotImplementedError

    def holdout(self, sweep: Sweep, fit: EstimatorFit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError


@dataclass
class _Points:
    """Near-optimal runs as law observations (plateau, compute)."""

    cell_index: np.ndarray
    log_lr: np.ndarray
    log_batch: np.ndarray
    boot_weight: np.ndarray | None = None  # (R, n) run-level resample counts
    optima: list[dict[str, Any]] = field(default_factory=list)


class Plateau(Estimator):
    name = "plateau"
    source = "Step Law (Li et al. 2025, arXiv 2503.04715): runs within 0.25% of the cell's best"

    def __init__(self, threshold: float = 0.0025):
        self.threshold = threshold

    def points(self, sweep: Sweep, rng: np.random.Generator, n_boot: int) -> _Points:
        index, log_lr, log_b, counts, optima = [], [], [], [], []
        for c, cell in enumerate(sweep.cells):
            near = near_optimal_mask(cell.loss, self.threshold)
            m = int(near.sum())
            index.append(np.full(m, c))
            log_lr.append(cell.log_lr[near])
            log_b.append(cell.log_batch[near])
            # Run-level resample: the cell's near-optimal runs drawn with replacement.
            counts.append(resample_counts(rng, m, n_boot))
            optima.append(
                {
                    "lr": float(np.exp(cell.log_lr[near].mean())),
                    "batch_size_tokens": float(np.exp(cell.log_batch[near].mean())),
                    "near_optimal_runs": m,
                }
            )
        return _Points(
            np.concatenate(index),
            np.concatenate(log_lr),
            np.concatenate(log_b),
            np.concatenate(counts, axis=1).astype(float),
            optima,
        )

    def fit(
        self, sweep: Sweep, rng: np.random.Generator, n_boot: int, cell_counts: np.ndarray | None
    ) -> EstimatorFit:
        pts = self.points(sweep, rng, n_boot)
        features = cell_features(sweep)
        ones = np.ones(pts.cell_index.size)
        laws = [
            fit_power_law(
                target=target,
                variables=variables,
                features=np.column_stack([features[v][pts.cell_index] for v in variables]),
                y=y,
                weight=ones,
                cell_index=pts.cell_index,
                boot_y=None,
                boot_weight=pts.boot_weight,
                cell_counts=cell_counts,
            )
            for target, variables, y in (
                ("lr", self.lr_variables, pts.log_lr),
                ("batch_size_tokens", self.batch_variables, pts.log_batch),
            )
        ]
        return EstimatorFit(self, laws[0], laws[1], pts.optima, state=pts)

    def holdout(self, sweep: Sweep, fit: EstimatorFit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pts: _Points = fit.state
        features = cell_features(sweep)
        n_cells = len(sweep.cells)
        # One weighting per fold: the held-out cell's points get weight zero.
        masks = (pts.cell_index[None, :] != np.arange(n_cells)[:, None]).astype(float)
        out = []
        for variables, y in ((self.lr_variables, pts.log_lr), (self.batch_variables, pts.log_batch)):
            x = np.column_stack([np.ones(y.size)] + [features[v][pts.cell_index] for v in variables])
            coef, ok = batched_wls(x, y, masks)
            target_x = np.column_stack([np.ones(n_cells)] + [features[v] for v in variables])
            out.append((np.einsum("cp,cp->c", coef, target_x), ok))
        return out[0][0], out[1][0], out[0][1] & out[1][1]


class Compute(Plateau):
    name = "compute"
    source = (
        "DeepSeek LLM (Bi et al. 2024, arXiv 2401.02954): lr = a C^b, B = c C^d,"
        " C = M D with M the non-embedding FLOPs/token; runs within 0.25% of the best"
    )
    lr_variables = ("C",)
    batch_variables = ("C",)

    def available(self, sweep: Sweep) -> str | None:
        missing = [c.cell_id for c in sweep.cells if c.flops_per_token is None]
        if missing:
            return f"flops_per_token (M) unknown for {len(missing)} cells"
        return None
