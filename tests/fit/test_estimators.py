"""Conformance: every estimator honours the Estimator contract (estimators.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sweeper.fit import ESTIMATORS, fit_sweep, load_sweep, make_estimator
from sweeper.fit.laws import bootstrap_cell_counts


@pytest.fixture(scope="module")
def sweep(synthetic_run):
    return load_sweep(synthetic_run)[0]


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
class TestEstimatorContract:
    def test_documents_its_source(self, name):
        estimator = make_estimator(name)
        assert estimator.name == name
        assert len(estimator.source) > 20
        assert estimator.lr_variables and estimator.batch_variables

    def test_fit_returns_laws_optima_and_bootstrap(self, sweep, name):
        fit = fit_sweep(sweep, name, n_bootstrap=64, seed=3)
        assert len(fit.cell_optima) == len(sweep.cells)
        for optimum, cell in zip(fit.cell_optima, sweep.cells):
            assert cell.lr.min() * 0.999 <= optimum["lr"] <= cell.lr.max() * 1.001
            assert optimum["near_optimal_runs"] >= 1
        for law in (fit.lr_law, fit.batch_law):
            assert law.coef.shape == (1 + len(law.variables),)
            assert law.bootstrap.shape == (64 - law.n_degenerate, law.coef.size)
            lo, hi = law.interval()[1]
            assert lo <= law.coef[1] <= hi

    def test_same_seed_same_numbers(self, sweep, name):
        a = fit_sweep(sweep, name, n_bootstrap=32, seed=7)
        b = fit_sweep(sweep, name, n_bootstrap=32, seed=7)
        np.testing.assert_array_equal(a.lr_law.bootstrap, b.lr_law.bootstrap)

    def test_holdout_equals_a_refit_without_the_cell(self, sweep, name):
        """The batched leave-one-cell-out predictions are exactly what fitting the other
        cells alone and predicting the held-out one gives."""
        estimator = make_estimator(name)
        fit = fit_sweep(sweep, estimator, n_bootstrap=0)
        log_lr, log_b, ok = estimator.holdout(sweep, fit)
        assert ok.all()
        for held in (0, 7, len(sweep.cells) - 1):
            rest = dataclasses.replace(
                sweep, cells=[c for i, c in enumerate(sweep.cells) if i != held], cache={}
            )
            refit = fit_sweep(rest, make_estimator(name), n_bootstrap=0)
            cell = sweep.cells[held]
            logs = {
                "N": np.log(cell.n_params),
                "D": np.log(cell.tokens),
                "C": np.log(cell.compute) if cell.compute else np.nan,
            }
            for law, predicted in ((refit.lr_law, log_lr[held]), (refit.batch_law, log_b[held])):
                expected = law.coef[0] + sum(c * logs[v] for c, v in zip(law.coef[1:], law.variables))
                assert predicted == pytest.approx(expected, abs=1e-9)

    def test_cell_level_resampling_is_used(self, sweep, name):
        """Dropping whole cells must move the fit: a replicate with cell multiplicities
        differs from the full-data fit."""
        estimator = make_estimator(name)
        rng = np.random.default_rng(0)
        counts = bootstrap_cell_counts(rng, len(sweep.cells), 8)
        fit = estimator.fit(sweep, rng, 8, counts)
        assert np.ptp(fit.lr_law.bootstrap[:, 1]) > 0
