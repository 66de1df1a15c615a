"""``--estimator auto``: the table's own leave-one-cell-out evaluation picks the estimator."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from sweeper.fit import DEFAULT_ESTIMATOR, fit_run, load_sweep
from sweeper.fit.auto import FALLBACK, MIN_CELLS, TIE
from tests.fit.synthetic import Truth, synthetic_rows, write_run


def test_auto_is_the_default() -> None:
    assert DEFAULT_ESTIMATOR == "auto"


def test_auto_picks_compute_where_the_optima_follow_compute(tmp_path, cli) -> None:
    """Both optima follow C = M D alone (lr ~ (N D)^-0.25, B ~ (N D)^0.25), so the batch
    optimum moves with N: the N-D laws' batch law (B = c D^gamma) cannot follow it, and
    compute's can. compute's held-out regret is ~0 and the others' is not: auto must pick it."""
    truth = Truth(a=30.0, alpha=-0.25, beta=-0.25, c=3.0, gamma=0.25, delta=0.25)
    rows = synthetic_rows(truth, sizes=(1e7, 3e7, 1e8, 3e8, 1e9), noise=0.0, k_lr=0.05, k_b=0.03, seed=4)
    run = write_run(tmp_path / "run", rows)
    result = CliRunner().invoke(cli, ["fit", str(run), "--bootstrap", "50", "--no-plots"])
    assert result.exit_code == 0, result.output
    document = json.loads((run / "fit.json").read_text())
    choice = document["estimator_choice"]
    assert document["estimator"] == "compute" == choice["chosen"] and choice["requested"] == "auto"
    figures = choice["figures"]
    assert {"plateau", "smooth", "compute", "surface"} <= set(figures)
    for other in set(figures) - {"compute"}:
        assert figures["compute"]["mean_regret"] + TIE < figures[other]["mean_regret"]
    assert "chosen by --estimator auto" in result.output and "<- used (chosen by auto)" in result.output


def test_ties_go_to_the_simpler_estimator(tmp_path) -> None:
    """Grids centred exactly on the optimum, no noise: the best run is the optimum, so every
    interpolating estimator ties with plateau, and the simplest (plateau) is used."""
    rows = synthetic_rows(Truth(), noise=0.0, offset=0.0, k_lr=0.05, k_b=0.03, n_lr=5, n_b=5)
    run = write_run(tmp_path / "run", rows)
    report = fit_run(run, n_bootstrap=0, plots=False, loss_law=False)
    figures = report.choice.figures
    assert figures["plateau"]["mean_regret"] < TIE and figures["smooth"]["mean_regret"] < TIE
    assert report.estimator == "plateau" and "simpler" in report.choice.reason


def test_too_few_cells_fall_back_to_plateau_and_say_so(tmp_path) -> None:
    rows = synthetic_rows(Truth(), sizes=(1e6, 1e7), budgets=(1e9, 1e10), n_lr=7, n_b=5)
    run = write_run(tmp_path / "run", rows)
    sweep, _ = load_sweep(run)
    assert len(sweep.cells) < MIN_CELLS
    report = fit_run(run, n_bootstrap=20, plots=False, loss_law=False)
    assert report.estimator == FALLBACK
    assert "cannot rank" in report.choice.reason and "cannot rank" in report.summary()
    assert json.loads((run / "fit.json").read_text())["estimator_choice"]["chosen"] == FALLBACK


@pytest.mark.parametrize("name", ["plateau", "smooth", "surface"])
def test_an_explicit_estimator_is_used_and_labelled(synthetic_run, tmp_path, name) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(synthetic_run / "trials", run / "trials")
    report = fit_run(run, estimator=name, n_bootstrap=0, evaluate=True, plots=False, loss_law=False)
    assert report.estimator == name and report.choice is None
    assert "<- used (--estimator" in report.summary()
