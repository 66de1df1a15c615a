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
from sweeper.fit.laws import PowerLawFit, batched_gls, batched_wls, resample_counts
from sweeper.fit.noise import noise_width
from sweeper.fit.select import near_optimal_mask

EIGEN_FLOOR = 1e-3


def locality_weight(loss: np.ndarray, width: float, min_points: int) -> np.ndarray:
    """exp(-1/2 (excess / w)^2) per run, excess = L / L_best - 1: a quadratic in logs holds
    near the minimum only. w is ``width``, widened until ``min_points`` runs carry weight
    >= e^-1/2 (the quadratic's coefficients need that many)."""
    excess = loss / loss.min() - 1.0
    k = min(min_points, loss.size) - 1
    scale_w = max(width, float(np.partition(excess, k)[k]))
    return np.exp(-0.5 * (excess / scale_w) ** 2)


def quadratic_optima(
    log_lr: np.ndarray, log_b: np.ndarray, loss: np.ndarray, counts: np.ndarray, width: float, min_points: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Argmin and curvature of the weighted quadratic for each row of ``counts`` (R, m)
    (run multiplicities; a row of ones is the data itself).

    Returns z (R, 2) in (log lr, log B), H (R, 2, 2) in log-loss per (log unit)^2,
    convex (R,), clipped (R,)."""
    best = int(np.argmin(loss))
    weight = locality_weight(loss, width, min_points)
    origin = np.array([log_lr[best], log_b[best]])
    span = np.array([np.ptp(log_lr) or 1.0, np.ptp(log_b) or 1.0])
    u = (log_lr - origin[0]) / span[0]
    v = (log_b - origin[1]) / span[1]
    x = np.column_stack([np.ones_like(u), u, v, 0.5 * u * u, u * v, 0.5 * v * v])
    coef, ok = batched_wls(x, np.log(loss), counts * weight[None, :])
    coef = np.where(ok[:, None], coef, 0.0)
    h = np.stack([np.stack([coef[:, 3], coef[:, 4]], -1), np.stack([coef[:, 4], coef[:, 5]], -1)], -2)
    eig, vec = np.linalg.eigh(h)
    convex = ok & (eig[:, 0] > 0)
    safe_h = np.where(convex[:, None, None], h, np.eye(2))
    step = -np.linalg.solve(safe_h, coef[:, 1:3][..., None])[..., 0]
    step = np.where(convex[:, None], step, 0.0)
    lo, hi = np.array([u.min(), v.min()]), np.array([u.max(), v.max()])
    clipped_step = np.clip(step, lo, hi)
    clipped = np.any(clipped_step != step, axis=1)
    z = origin + clipped_step * span
    floor = EIGEN_FLOOR * np.maximum(eig[:, -1:], 1e-12)
    h_psd = np.einsum("rij,rj,rkj->rik", vec, np.maximum(eig, floor), vec)
    # Back to log units: H_log = S^-1 H_unit S^-1 with S = diag(span).
    h_log = h_psd / np.outer(span, span)[None, :, :]
    return z, h_log, convex, clipped


class Smooth(Estimator):
    name = "smooth"
    source = (
        "per-cell quadratic of log loss over (log lr, log B) around the minimum; laws"
        " fitted jointly by GLS weighted with each cell's curvature (inverse uncertainty)"
    )

    def __init__(self, width: float = 0.0025, min_points: int = 8):
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
                    "near_optimal_runs": int(near_optimal_mask(cell.loss, 0.0025).sum()),
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
