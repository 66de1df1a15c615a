"""Step Law's released MoE sweep (708 runs, 16 cells), imported and fitted as a user would.

The table lives outside the repository (../shared/data/steplaw); these tests skip, saying
so, only when it is absent.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from sweeper.fit import load_sweep
from sweeper.fit.auto import TIE, build_auto_report
from sweeper.importers import import_steplaw
from sweeper.results.reader import read_trials
from tests.fit.conftest import MOE_CSV

# The released Step Law table is read from the shared data folder beside the checkout (used
# from there, never copied into the repository): a checkout without it cannot run these.
pytestmark = pytest.mark.skipif(
    not MOE_CSV.is_file(),
    reason=f"the released Step Law MoE table is kept beside the checkout, not in it; not found at {MOE_CSV}",
)


@pytest.fixture(scope="module")
def moe_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("moe")
    assert import_steplaw(MOE_CSV, run_dir, size_column="Na") == 708
    return run_dir


@pytest.fixture(scope="module")
def moe_report(moe_run):
    sweep, _ = load_sweep(moe_run)
    return build_auto_report(sweep, n_bootstrap=300, seed=0)


def test_import_keeps_every_run_in_the_trials_schema(moe_run):
    table = read_trials(moe_run).to_pandas()
    assert len(table) == 708
    assert set(table["status"]) == {"complete"}
    assert (table["batch_size_tokens"] == table["batch_size"] * 2048).all()
    assert table["n_params"].nunique() == 4 and table["tokens_budget"].nunique() == 4
    assert table["n_params"].min() == 187973632  # Na, the active parameters
    assert table["flops_per_token"].notna().all()


def test_plateau_reproduces_step_laws_held_out_regret(moe_report):
    """Issue 3: Step Law's rule lands about 0.05% above the best loss on average."""
    plateau = moe_report.evaluations["plateau"]
    assert plateau.n_evaluated == 16
    assert 0.0003 < plateau.mean < 0.0008
    assert 0.0010 < plateau.worst < 0.0030


def test_auto_uses_the_lowest_held_out_mean_of_this_table(moe_report):
    figures = moe_report.choice.figures
    assert set(figures) == set(moe_report.evaluations)
    lowest = min(f["mean_regret"] for f in figures.values())
    assert figures[moe_report.estimator]["mean_regret"] < lowest + TIE


def test_every_estimator_reports_its_regret_in_fit_json(moe_report):
    document = moe_report.document()
    for name in ("plateau", "smooth", "compute"):
        evaluation = document["estimators"][name]["evaluation"]
        for key in ("mean_regret", "median_regret", "worst_regret"):
            assert 0.0 <= evaluation[key] < 0.01
        assert len(evaluation["cells"]) == 16
    json.dumps(document)  # serialisable as is


def test_cli_import_then_fit_evaluate(cli, tmp_path):
    out = tmp_path / "moe"
    result = CliRunner().invoke(
        cli, ["import", "steplaw", str(MOE_CSV), "--size-column", "Na", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["fit", str(out), "--evaluate", "--bootstrap", "100", "--no-plots"])
    assert result.exit_code == 0, result.output
    for name in ("plateau", "smooth", "compute"):
        assert f"  {name} " in result.output
    assert "held-out evaluation" in result.output and "worst" in result.output
    assert "chosen by --estimator auto" in result.output and "<- used (chosen by auto)" in result.output
    assert json.loads((out / "fit.json").read_text())["evaluation"]["plateau"]["cells_evaluated"] == 16
