"""The Power scheduler's law: recovered on synthetic WSD landscapes with known a and b, absent
(with the reason) where it cannot be fitted."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sweeper.fit.data import Cell, Sweep
from sweeper.fit.power import batch_optima, fit_power_scheduler, power_scheduler_missing_reason

TRUE_A, TRUE_B = 2e-5, -0.4


def synthetic_sweep(noise: float = 0.0, seed: int = 0, kind: str = "wsd") -> Sweep:
    """Cells over N x D, each with 3 batch sizes and 9 learning rates; at each batch the loss
    is a parabola in log lr around log(B * a * D^b) (the law), plus optional noise."""
    rng = np.random.default_rng(seed)
    cells = []
    for n in (1e4, 4e4):
        for d in (1e6, 4e6, 1.6e7):
            lrs, batches, losses = [], [], []
            for batch in (128.0, 512.0, 2048.0):
                optimum = math.log(batch * TRUE_A * d**TRUE_B)
                for step in range(-4, 5):
                    log_lr = optimum + 0.35 * step + 0.1  # the optimum between grid points
                    lrs.append(math.exp(log_lr))
                    batches.append(batch)
                    losses.append(3.0 + 0.05 * (log_lr - optimum) ** 2 + noise * rng.standard_normal())
            cells.append(
                Cell(
                    f"N{n:g}-D{d:g}",
                    n,
                    d,
                    64,
                    None,
                    np.array(lrs),
                    np.array(batches),
                    np.array(losses),
                    np.ones(len(lrs), int),
                )
            )
    return Sweep(
        "synthetic",
        cells,
        {"complete": sum(c.loss.size for c in cells)},
        schedule={"kind": kind, "warmup_fraction": None, "min_lr_ratio": 0.1, "decay_fraction": 0.2},
    )


def test_noise_free_landscape_gives_back_the_true_law():
    fit = fit_power_scheduler(synthetic_sweep(), n_bootstrap=200)
    assert fit is not None
    assert fit.b == pytest.approx(TRUE_B, abs=0.02)
    assert fit.a == pytest.approx(TRUE_A, rel=0.15)
    assert fit.free_batch_exponent == pytest.approx(1.0, abs=0.05)
    assert len(fit.points) == 18 and fit.edge_points == 0


def test_noisy_landscape_keeps_the_truth_inside_its_intervals():
    for seed in range(3):
        fit = fit_power_scheduler(synthetic_sweep(noise=0.002, seed=seed), n_bootstrap=300, seed=seed)
        assert fit is not None
        interval = fit.interval()
        assert interval["b"][0] <= TRUE_B <= interval["b"][1]
        assert interval["a"][0] <= TRUE_A <= interval["a"][1]
        document = fit.to_dict()
        assert document["n_bootstrap"] + round(document["bootstrap_discarded_share"] * 300) == 300


def test_only_wsd_sweeps_are_fitted_and_the_reason_is_said():
    cosine = synthetic_sweep(kind="cosine")
    assert fit_power_scheduler(cosine) is None
    assert "WSD" in power_scheduler_missing_reason(cosine) and "cosine" in power_scheduler_missing_reason(
        cosine
    )


def test_optima_on_the_lr_grid_edge_are_left_out():
    sweep = synthetic_sweep()
    cell = sweep.cells[0]
    keep = cell.lr < np.exp(np.log(cell.lr).mean())  # drop the upper half: the minimum moves to the edge
    sweep.cells[0] = Cell(
        cell.cell_id,
        cell.n_params,
        cell.tokens,
        64,
        None,
        cell.lr[keep],
        cell.batch_tokens[keep],
        cell.loss[keep],
        cell.replicates[keep],
    )
    points, edges = batch_optima(sweep)
    assert edges >= 1 and all(p.cell_id != cell.cell_id or p.lr_opt < cell.lr[keep].max() for p in points)
