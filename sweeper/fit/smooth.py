"""The ``smooth`` estimator: per-cell quadratic optima, laws fitted by curvature-weighted GLS.

See estimators.py for the method and its sources. Here, the mechanics:

1. `quadratic_optima` fits, for one cell and for R run-level resamples of it at once,
   log L = q0 + g.u + 1/2 u^T H u over u = ((log lr, log B) - best run) / grid span, weighted
   by exp(-1/2 (excess / width)^2), excess = L / L_best - 1. The argmin -H^-1 g is clipped
   to the grid (no evidence beyond it); a surface that is not convex falls back to the best
   run. H's eigenvalues are floored at 1e-3 of its largest, so a flat direction carries
   almost no weight but the matrix stays invertible.
2. The laws' coefficients b = (log a, alpha, beta, log c, gamma) minimise
   sum_c m_c (A_c b - z_c)^T H_c (A_c b - z_c) (`laws.batched_gls`), for the data and for every
   bootstrap replicate (cells drawn with multiplicities m, each cell's z and H from that
   replicate's run resample) in one batch.
"""

from __future__ import annotations

import numpy as np

from sweeper.fit.data import FitError, Sweep
from sweeper.fit.estimators import Estimator, EstimatorFit, cell_features
from sweeper.fit.laws import PowerLawFit, batched_gls, resample_counts
from sweeper.fit.noise import noise_width
from sweeper.fit.quadratic import QUADRATIC_BAND, QUADRATIC_MIN_POINTS, quadratic_optima
from sweeper.fit.select import NEAR_OPTIMAL_BAND, near_optimal_mask


class Smooth(Estimator):
    name = "smooth"
    source = (
        "per-cell quadratic of log loss over (log lr, log B) around the minimum; laws"
        " fitted jointly by GLS weighted with each cell's curvature (inverse uncertainty)"
    )

    def __init__(self, width: float = QUADRATIC_BAND, min_points: int = QUADRATIC_MIN_POINTS):
        self.width = width  # relative loss excess at which a run's weight falls to e^-1/2
        self.min_points = min_points  # at least this many runs carry weight >= e^-1/2

    def _design(self, sweep: Sweep) -> tuple[np.ndarray, dict[str, float]]:
        """A_c (C, 2, p): rows (lr, B) of the joint coefficient vector; features centred."""
        features = cell_features(sweep)
        centre = {v: float(np.mean(features[v])) for v in self.lr_variables + self.batch_variables}
        n_cells = len(sweep.cells)
        p_lr, p_b = 1 + len(self.lr_variables), 1 + len(self.batch_variables)
        design = np.zeros((n_cells, 2, p_lr + p_b))
        design[:, 0, 0] = 1.0
        for k, v in enumerate(self.lr_variables):
            design[:, 0, 1 + k] = features[v] - centre[v]
        design[:, 1, p_lr] = 1.0
        for k, v in enumerate(self.batch_variables):
            design[:, 1, p_lr + 1 + k] = features[v] - centre[v]
        return design, centre

    def _uncentre(self, coef: np.ndarray, centre: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        p_lr = 1 + len(self.lr_variables)
        lr, b = coef[:, :p_lr].copy(), coef[:, p_lr:].copy()
        for law, variables in ((lr, self.lr_variables), (b, self.batch_variables)):
            for k, v in enumerate(variables):
                law[:, 0] -= law[:, 1 + k] * centre[v]
        return lr, b

    def fit(
        self, sweep: Sweep, rng: np.random.Generator, n_boot: int, cell_counts: np.ndarray | None
    ) -> EstimatorFit:
        n_cells = len(sweep.cells)
        z = np.zeros((1 + n_boot, n_cells, 2))
        h = np.zeros((1 + n_boot, n_cells, 2, 2))
        optima = []
        for c, cell in enumerate(sweep.cells):
            m = cell.loss.size
            counts = np.vstack([np.ones((1, m)), resample_counts(rng, m, n_boot)])
            # Loss differences below one run's seed noise are not evidence: weigh them alike.
            width = noise_width(self.width, cell.noise)
            zc, hc, convex, clipped = quadratic_optima(
                cell.log_lr, cell.log_batch, cell.loss, counts, width, self.min_points
            )
            z[:, c], h[:, c] = zc, hc
            note = (
                "no convex quadratic fits near the minimum (too few distinct grid values,"
                " or a saddle): best run used"
                if not convex[0]
                else "argmin beyond the grid: clipped to its edge"
                if clipped[0]
                else ""
            )
            optima.append(
                {
                    "lr": float(np.exp(zc[0, 0])),
                    "batch_size_tokens": float(np.exp(zc[0, 1])),
                    "near_optimal_runs": int(near_optimal_mask(cell.loss, NEAR_OPTIMAL_BAND).sum()),
                    "note": note,
                }
            )
        design, centre = self._design(sweep)
        multiplicity = np.ones((1, n_cells))
        if cell_counts is not None and n_boot:
            multiplicity = np.vstack([multiplicity, cell_counts.astype(float)])
        coef, ok = batched_gls(design, h[: len(multiplicity)], z[: len(multiplicity)], multiplicity)
        if not ok[0]:
            raise FitError(
                "the cells' quadratic optima do not determine the laws (singular"
                " design; too few distinct lr or batch values per cell?)"
            )
        lr, b = self._uncentre(coef, centre)
        features = cell_features(sweep)
        laws = []
        for target, variables, law, axis in (
            ("lr", self.lr_variables, lr, 0),
            ("batch_size_tokens", self.batch_variables, b, 1),
        ):
            x = np.column_stack([np.ones(n_cells)] + [features[v] for v in variables])
            y = z[0, :, axis]
            residual = y - x @ law[0]
            total = np.sum((y - y.mean()) ** 2)
            r2 = float(1.0 - np.sum(residual**2) / total) if total > 0 else float("nan")
            laws.append(
                PowerLawFit(
                    target,
                    variables,
                    law[0],
                    law[1:][ok[1:]],
                    r2,
                    n_cells,
                    n_cells,
                    n_degenerate=int((~ok[1:]).sum()),
                )
            )
        return EstimatorFit(self, laws[0], laws[1], optima, state=(design, centre, z[0], h[0]))

    def holdout(self, sweep: Sweep, fit: EstimatorFit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        design, _, z, h = fit.state
        n_cells = len(sweep.cells)
        folds = 1.0 - np.eye(n_cells)  # fold f: every cell but f, once
        coef, ok = batched_gls(design, h, z, folds)
        predicted = np.einsum("cip,cp->ci", design, coef)
        return predicted[:, 0], predicted[:, 1], ok
