"""Fits on synthetic sweeps with known exponents: point estimates and interval coverage."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest

from sweeper.fit import FitError, clean_trials, fit_run, fit_sweep, load_sweep
from sweeper.fit.laws import batched_wls
from sweeper.results.schema import TRIALS_SCHEMA
from tests.fit.synthetic import synthetic_rows, write_run


def _exponents(fit):
    return {"alpha": fit.lr_law.coef[1], "beta": fit.lr_law.coef[2], "gamma": fit.batch_law.coef[1]}


def _intervals(fit):
    lr, b = fit.lr_law.interval(), fit.batch_law.interval()
    return {"alpha": lr[1], "beta": lr[2], "gamma": b[1]}


def test_batched_wls_matches_numpy_lstsq():
    rng = np.random.default_rng(0)
    x = np.column_stack([np.ones(50), rng.normal(size=(50, 2)) * [3.0, 0.1] + [15.0, 20.0]])
    y = x @ [1.0, -0.5, 0.3] + 0.01 * rng.normal(size=50)
    w = rng.uniform(0.1, 2.0, size=(4, 50))
    coef, ok = batched_wls(x, y, w)
    assert ok.all()
    for r in range(4):
        sw = np.sqrt(w[r])
        expected = np.linalg.lstsq(x * sw[:, None], y * sw, rcond=None)[0]
        np.testing.assert_allclose(coef[r], expected, rtol=1e-7, atol=1e-9)


def test_batched_wls_flags_singular_designs():
    x = np.column_stack([np.ones(6), [1.0, 1, 2, 2, 3, 3]])
    w = np.array([[1.0, 1, 0, 0, 0, 0], [1.0, 1, 1, 1, 1, 1]])  # first: one x value only
    coef, ok = batched_wls(x, np.arange(6.0), w)
    assert ok.tolist() == [False, True]
    assert np.isnan(coef[0]).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_estimator_recovers_exponents_within_two_percent(truth, seed):
    """Issue 2's criterion, over several noise draws and grid placements. (Step Law's
    ``plateau`` rule does not meet it reliably: its near-optimal set moves in grid steps, and
    on seed 1 its gamma is 6% off; it is held to its intervals below instead.)"""
    sweep = clean_trials(pa.Table.from_pylist(synthetic_rows(truth, seed=seed), schema=TRIALS_SCHEMA))
    fit = fit_sweep(sweep, "smooth", n_bootstrap=0)
    for name, value in _exponents(fit).items():
        expected = getattr(truth, name)
        assert abs(value - expected) <= 0.02 * abs(expected), (name, value, expected)


@pytest.mark.parametrize("estimator", ["plateau", "smooth"])
def test_true_exponents_inside_bootstrap_intervals(synthetic_run, asymmetric_run, truth, estimator):
    for run in (synthetic_run, asymmetric_run):
        sweep, _ = load_sweep(run)
        fit = fit_sweep(sweep, estimator, n_bootstrap=1000)
        for name, (lo, hi) in _intervals(fit).items():
            assert lo <= getattr(truth, name) <= hi, (run.name, estimator, name, lo, hi)


def test_default_estimator_within_two_percent_on_asymmetric_landscape(asymmetric_run, truth):
    sweep, _ = load_sweep(asymmetric_run)
    fit = fit_sweep(sweep, "smooth", n_bootstrap=0)
    for name, value in _exponents(fit).items():
        expected = getattr(truth, name)
        assert abs(value - expected) <= 0.02 * abs(expected), (name, value, expected)


def test_compute_law_matches_its_definition(synthetic_run):
    """lr = a C^b: with C = M D the fitted exponent equals a one-variable regression of the
    near-optimal log lr on log C."""
    sweep, _ = load_sweep(synthetic_run)
    fit = fit_sweep(sweep, "compute", n_bootstrap=0)
    obs = fit.state  # the near-optimal points (plateau and compute share them)
    log_c = np.log([sweep.cells[i].flops_per_token * sweep.cells[i].tokens for i in obs.cell_index])
    slope, intercept = np.polyfit(log_c, obs.log_lr, 1)
    assert fit.lr_law.coef[1] == pytest.approx(slope, rel=1e-8)
    assert fit.lr_law.coef[0] == pytest.approx(intercept, rel=1e-8)


def test_fit_run_writes_fit_json_and_plots(synthetic_run):
    report = fit_run(synthetic_run, n_bootstrap=100, plots=True)
    document = json.loads((synthetic_run / "fit.json").read_text())
    assert document["schema_version"] == 1
    assert document["estimator"] == report.estimator
    assert len(document["lr_law"]["bootstrap_log_coefficients"]) == 100
    assert set(document["lr_law"]["coefficients"]) == {"a", "alpha", "beta"}
    assert document["counts"]["fitted_runs"] == 2340
    assert document["data_range"]["n_params_max"] == 1e8
    assert len(document["cells"]) == 20
    assert document["schedule"] == {"kind": "cosine"}  # the synthetic rows record no fractions
    for name in ("loss_vs_lr.png", "heatmaps.png", "laws.png"):
        assert (synthetic_run / "plots" / name).stat().st_size > 1000
    text = report.summary()
    assert "alpha" in text and "95% interval" in text and "R^2" in text
    assert "near-optimal runs" in text
    assert math.isfinite(document["lr_law"]["r2"]) and document["lr_law"]["r2"] > 0.9


def test_too_few_cells_is_a_fit_error_and_writes_nothing(tmp_path):
    rows = synthetic_rows(sizes=(1e6,), budgets=(1e8, 1e9))
    write_run(tmp_path, rows)
    with pytest.raises(FitError, match="too few|distinct model sizes"):
        fit_run(tmp_path, plots=False)
    assert not (tmp_path / "fit.json").exists()
