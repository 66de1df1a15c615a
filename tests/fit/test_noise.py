"""The noise floor: pooled seed-to-seed spread near each optimum, against the near-optimal
band, on synthetic cells whose noise is known."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from sweeper.fit.noise import band_inside_noise, noise_width, replicate_noise
from sweeper.fit.select import NEAR_OPTIMAL_BAND, clean_trials
from sweeper.results.schema import TRIALS_SCHEMA

from .synthetic import _row


def replicated_table(sd: float, seeds: int = 4, seed: int = 0) -> pa.Table:
    """Four cells of a 7 x 3 grid around a known optimum, ``seeds`` runs per point with
    Gaussian noise of ``sd`` nats on the loss."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in (1e5, 4e5):
        for d in (1e7, 4e7):
            for lr in 1e-3 * 2.0 ** np.arange(-3, 4):
                for b in (2, 4, 8):
                    clean = 2.5 + 0.05 * math.log(lr / 1e-3) ** 2 + 0.03 * math.log(b / 4) ** 2
                    for _ in range(seeds):
                        rows.append(
                            _row(n, d, 64, float(lr), b, clean + sd * rng.standard_normal(), len(rows))
                        )
    return pa.Table.from_pylist(rows, schema=TRIALS_SCHEMA)


@pytest.mark.parametrize("sd", [0.002, 0.03])
def test_pooled_sd_recovers_the_known_noise(sd: float) -> None:
    sweep = clean_trials(replicated_table(sd))
    for cell in sweep.cells:
        assert cell.noise is not None and cell.noise.dof >= 3 * cell.noise.points
        # dof >= 30 per cell: the pooled sd is within ~25% of the truth with room to spare.
        assert cell.noise.sd == pytest.approx(sd, rel=0.45)
        assert cell.noise.relative == pytest.approx(cell.noise.sd / cell.best_loss)


def test_band_inside_the_noise_is_flagged_and_widens_the_window() -> None:
    quiet = clean_trials(replicated_table(0.001))
    loud = clean_trials(replicated_table(0.05))
    assert not any(flag.startswith("NOISE") for cell in quiet.cells for flag in cell.flags)
    for cell in loud.cells:
        assert band_inside_noise(NEAR_OPTIMAL_BAND, cell.noise)
        assert any(flag.startswith("NOISE") for flag in cell.flags)
        assert noise_width(NEAR_OPTIMAL_BAND, cell.noise) == cell.noise.relative > NEAR_OPTIMAL_BAND


def test_no_replicates_no_floor_and_far_points_do_not_count() -> None:
    single = clean_trials(replicated_table(0.01, seeds=1))
    assert all(cell.noise is None for cell in single.cells)
    assert noise_width(NEAR_OPTIMAL_BAND, None) == NEAR_OPTIMAL_BAND
    # A wildly noisy replicated point far above the optimum is not pooled.
    lr = np.array([1e-3, 1e-3, 2e-3, 2e-3, 1e-1, 1e-1])
    b = np.full(6, 64.0)
    loss = np.array([2.50, 2.52, 2.60, 2.62, 4.0, 6.0])
    floor = replicate_noise(lr, b, loss)
    assert floor is not None and floor.points == 2 and floor.dof == 2  # within 5% of the best
    assert floor.sd == pytest.approx(math.sqrt(4 * 0.01**2 / 2))
