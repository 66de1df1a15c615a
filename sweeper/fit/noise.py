"""The noise floor of a cell: how much one run's loss moves when only its seed changes.

A sweep with replicate seeds measures it directly. Pooled over the replicated grid points
near the optimum (where the near-optimal band is decided), the unbiased within-point
variance is

    s^2 = sum_points sum_seeds (L - mean_point)^2 / sum_points (n_point - 1),

with sum (n_point - 1) degrees of freedom. ``sd`` is s (nats): the spread of a single run.
A grid point's averaged loss carries s / sqrt(n) of it.

Why only near the optimum: training at high learning rate amplifies rounding and seed
differences (a diverging or spiking run can differ by tenths of a nat), which says nothing
about how well the runs that decide the optimum are measured. The near-optimal points are
those whose averaged loss lies within ``NEAR_BAND`` (relative) of the cell's best.

The band the estimators call near-optimal (a relative loss excess, 0.25% by default) is
inside the noise when ``sd / best_loss`` exceeds it: runs inside it cannot be ranked by one
seed each, and the optimum read from them moves with rounding. ``fit`` warns then, and the
``smooth`` estimator widens its weighting window to the noise (see ``noise_width``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEAR_BAND = 0.05  # replicated points within 5% of the cell's best loss measure its noise


@dataclass(frozen=True)
class NoiseFloor:
    """Seed-to-seed spread of one run's final loss in a cell, pooled near its optimum."""

    sd: float  # nats: standard deviation of a single run's loss
    relative: float  # sd / the cell's best averaged loss
    points: int  # replicated grid points it was pooled over
    dof: int  # degrees of freedom: sum over those points of (replicates - 1)

    def to_dict(self) -> dict:
        return {"sd": self.sd, "relative": self.relative, "points": self.points, "dof": self.dof}


def replicate_noise(
    lr: np.ndarray, batch: np.ndarray, loss: np.ndarray, near_band: float = NEAR_BAND
) -> NoiseFloor | None:
    """The pooled noise floor of one cell's runs (one entry per run, replicates repeated),
    or None when no grid point near the optimum has two finite replicates."""
    points: dict[tuple[float, float], list[float]] = {}
    for x, b, value in zip(np.asarray(lr).tolist(), np.asarray(batch).tolist(), np.asarray(loss).tolist()):
        if np.isfinite(value):
            points.setdefault((x, b), []).append(value)
    if not points:
        return None
    means = {key: float(np.mean(values)) for key, values in points.items()}
    best = min(means.values())
    near = [
        values
        for key, values in points.items()
        if len(values) >= 2 and means[key] <= best * (1.0 + near_band)
    ]
    dof = sum(len(values) - 1 for values in near)
    if dof == 0:
        return None
    squares = sum(float(np.sum((np.asarray(values) - np.mean(values)) ** 2)) for values in near)
    sd = float(np.sqrt(squares / dof))
    return NoiseFloor(sd=sd, relative=sd / best, points=len(near), dof=dof)


def noise_width(band: float, noise: NoiseFloor | None) -> float:
    """The relative loss excess an estimator should treat as flat: its own band, or the
    noise of one run when that is wider (differences smaller than the noise are not data)."""
    return band if noise is None else max(band, noise.relative)


def band_inside_noise(band: float, noise: NoiseFloor | None) -> bool:
    """True when runs differing by less than ``band`` (relative) cannot be told apart."""
    return noise is not None and noise.relative > band


__all__ = ["NEAR_BAND", "NoiseFloor", "band_inside_noise", "noise_width", "replicate_noise"]
