"""A cell's optimum located by a quadratic through the runs near its best: the per-cell
step of the ``smooth`` estimator, and the locator cleaning uses to decide whether a grid
brackets its cell's optimum.

Why not the best run: near the optimum, runs differ by less than their seed noise, so which
one is best is a draw; the quadratic weighs every run near the minimum and moves little when
one of them moves inside the noise.
"""

from __future__ import annotations

import numpy as np

from sweeper.fit.laws import batched_wls

EIGEN_FLOOR = 1e-3
QUADRATIC_BAND = 0.0025  # relative loss excess at which a run's weight falls to e^-1/2
QUADRATIC_MIN_POINTS = 8  # at least this many runs carry weight >= e^-1/2


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


__all__ = ["EIGEN_FLOOR", "QUADRATIC_BAND", "QUADRATIC_MIN_POINTS", "locality_weight", "quadratic_optima"]
