"""Loss law L = E + A/N^a + B/D^b: recovery on known values, and the batched solver."""

from __future__ import annotations

import numpy as np
import pytest

from sweeper.fit.data import Cell, Sweep
from sweeper.fit.losslaw import _fit, _huber, _predict_log_batched, batched_huber_lm, fit_loss_law

TRUE = {"E": 1.8, "A": 400.0, "a": 0.34, "B": 2000.0, "b": 0.28}


def _loss(n, d):
    return TRUE["E"] + TRUE["A"] / n ** TRUE["a"] + TRUE["B"] / d ** TRUE["b"]


def _sweep(noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    cells = []
    for n in np.geomspace(1e6, 3e8, 5):
        for d in np.geomspace(1e8, 3e10, 5):
            loss = _loss(n, d) * (1 + noise * rng.standard_normal())
            cells.append(
                Cell(
                    f"{n:.3g}-{d:.3g}",
                    float(n),
                    float(d),
                    256,
                    None,
                    lr=np.array([1e-3]),
                    batch_tokens=np.array([1e5]),
                    loss=np.array([loss]),
                    replicates=np.array([1]),
                )
            )
    return Sweep("loss", cells, {"complete": len(cells)})


def test_recovers_known_loss_law():
    fit = fit_loss_law(_sweep(), n_bootstrap=0)
    coefficients = fit.coefficients()
    for name in ("E", "a", "b"):
        assert coefficients[name] == pytest.approx(TRUE[name], rel=0.02)
    predicted, _ = fit.predict(3e9, 3e11)
    assert predicted == pytest.approx(_loss(3e9, 3e11), rel=1e-3)


def test_prediction_interval_covers_truth_with_noise():
    fit = fit_loss_law(_sweep(noise=1e-3, seed=2), n_bootstrap=300)
    predicted, (lo, hi) = fit.predict(1e9, 1e11)
    assert lo <= _loss(1e9, 1e11) <= hi
    assert lo <= predicted <= hi
    assert len(fit.bootstrap) > 250


def test_batched_solver_lands_where_least_squares_does():
    sweep = _sweep(noise=2e-3, seed=5)
    log_n = np.log([c.n_params for c in sweep.cells])
    log_d = np.log([c.tokens for c in sweep.cells])
    log_loss = np.log([c.best_loss for c in sweep.cells])
    start = _fit(log_n, log_d, log_loss, [np.array([0.5, 6.0, 7.0, 0.3, 0.3])])
    weights = np.random.default_rng(1).multinomial(25, np.full(25, 1 / 25), size=4).astype(float)
    batched, converged = batched_huber_lm(start, log_n, log_d, log_loss, weights)
    assert converged.all()
    for row, theta in zip(weights, batched):
        reps = row.astype(int)
        reference = _fit(np.repeat(log_n, reps), np.repeat(log_d, reps), np.repeat(log_loss, reps), [start])
        cost = _huber(_predict_log_batched(theta[None], log_n, log_d) - log_loss, row)
        cost_ref = _huber(_predict_log_batched(reference[None], log_n, log_d) - log_loss, row)
        assert cost[0] <= cost_ref[0] * (1 + 1e-6)


def test_too_few_cells_gives_no_loss_law():
    sweep = _sweep()
    sweep.cells = sweep.cells[:5]
    assert fit_loss_law(sweep) is None
