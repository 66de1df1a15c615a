"""The whole loop on a real local Ray: smoke recipe -> Parquet -> status -> fit -> predict.

One sweep runs once per test session (``smoke_run`` in conftest.py) and the tests read what
it left: the run folder, the driver's output, and what pandas saw while it was running.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from sweeper.recipe import load_recipe
from tests.conftest import RECIPES, SweepRun

pytestmark = pytest.mark.slow


def sweeper(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sweeper", *args], capture_output=True, text=True, timeout=timeout
    )


def test_submit_runs_every_planned_trial(smoke_run: SweepRun) -> None:
    assert smoke_run.returncode == 0, smoke_run.stderr[-3000:]
    recipe = load_recipe(RECIPES / "smoke.yaml")
    trials = pd.read_parquet(smoke_run.run_dir / "trials")
    planned = 4 * len(recipe.learning_rates.all()) * len(recipe.batch_sizes)
    assert len(trials) == planned and trials["trial_id"].is_unique
    assert set(trials["status"]) <= {"complete", "diverged"}
    complete = trials[trials["status"] == "complete"]
    assert len(complete) >= planned - 2
    # Headline loss is a real held-out loss: below a uniform guess over bytes (ln 256 = 5.55).
    assert complete["loss"].max() < 5.5
    assert (complete["batch_size_tokens"] == complete["batch_size"] * complete["seq_len"]).all()
    assert (trials["node_id"].str.len() > 0).all()


def test_curves_match_trials(smoke_run: SweepRun) -> None:
    trials = pd.read_parquet(smoke_run.run_dir / "trials")
    curves = pd.read_parquet(smoke_run.run_dir / "curves")
    assert set(curves["trial_id"]) == set(trials["trial_id"])
    last_step = curves.groupby("trial_id")["step"].max()
    complete = trials[trials["status"] == "complete"].set_index("trial_id")
    assert (last_step.loc[complete.index] == complete["steps"]).all()
    assert not curves.duplicated(["trial_id", "step"]).any()


def test_two_trials_ran_at_the_same_time(smoke_run: SweepRun) -> None:
    trials = pd.read_parquet(smoke_run.run_dir / "trials").sort_values("started_at")
    starts, ends = trials["started_at"].to_numpy(), trials["ended_at"].to_numpy()
    overlapping = sum(1 for i in range(len(starts)) for j in range(i + 1, len(starts)) if starts[j] < ends[i])
    assert overlapping > 0, "with 2 cores and 1 cpu per trial, trials must overlap in time"


def test_results_were_readable_mid_sweep(smoke_run: SweepRun) -> None:
    # What a user does mid-sweep (pandas on the folder) always read whole tables: never a
    # partial file, never more rows than trials, never fewer than an earlier read. How many
    # trials a read sees depends on when finished trials were flushed together (the driver
    # buffers them up to 2 s), so no particular count is asserted.
    total = len(pd.read_parquet(smoke_run.run_dir / "trials"))
    rows = smoke_run.mid_sweep_rows
    assert rows, "no read happened while the sweep ran"
    assert all(0 < count <= total for count in rows) and rows == sorted(rows), rows


def test_status_reports_counts_and_best_per_cell(smoke_run: SweepRun) -> None:
    result = sweeper("status", str(smoke_run.run_dir), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    trials = pd.read_parquet(smoke_run.run_dir / "trials")
    assert report["counts"]["complete"] == (trials["status"] == "complete").sum()
    assert report["driver"] == "finished"
    assert len(report["best_per_cell"]) == 4
    for cell in report["best_per_cell"]:
        cell_rows = trials[(trials["cell_id"] == cell["cell_id"]) & (trials["status"] == "complete")]
        assert cell["best_loss"] == pytest.approx(cell_rows["loss"].min())


def test_resubmit_runs_nothing_twice(smoke_run: SweepRun) -> None:
    before = pd.read_parquet(smoke_run.run_dir / "trials")
    result = sweeper("submit", str(smoke_run.run_dir / "recipe.yaml"), "--out", str(smoke_run.run_dir))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "0 to run" in result.stdout
    after = pd.read_parquet(smoke_run.run_dir / "trials")
    assert sorted(after["trial_id"]) == sorted(before["trial_id"])
    assert after.set_index("trial_id")["ended_at"].equals(before.set_index("trial_id")["ended_at"])


def test_fit_then_predict(smoke_run: SweepRun) -> None:
    fitted = sweeper("fit", str(smoke_run.run_dir), "--bootstrap", "200")
    assert fitted.returncode == 0, fitted.stderr[-2000:]
    fit_json = smoke_run.run_dir / "fit.json"
    fit = json.loads(fit_json.read_text())
    assert fit
    assert any(p.suffix == ".png" for p in (smoke_run.run_dir / "plots").iterdir())
    assert "near-optimal" in fitted.stdout and "R" in fitted.stdout
    # 5e6 parameters on 1e8 tokens is hundreds of times beyond the smoke ladder (N <= 1.3e4,
    # D <= 3.2e4): past the extrapolation limit, so predict refuses and says how to force it.
    args = ("predict", str(fit_json), "--params", "5e6", "--tokens", "1e8", "--seq-len", "256", "--json")
    refused = sweeper(*args)
    assert refused.returncode == 2 and "extrapolation limit" in refused.stderr and "--force" in refused.stderr
    assert refused.stdout == ""
    predicted = sweeper(*args, "--force")
    assert predicted.returncode == 0, predicted.stderr
    prediction = json.loads(predicted.stdout)
    for key in (
        "lr",
        "batch_size_tokens",
        "batch_size_sequences",
        "lr_interval",
        "batch_size_tokens_interval",
    ):
        assert key in prediction
    assert prediction["forced"] and "FORCED" in predicted.stderr and "beyond" in predicted.stderr
    # What the method guarantees: an interval is either stored as undetermined (null, with the
    # law saying why) or is a range of positive width; never a zero-width "precise" one.
    for law_name, key in (("lr_law", "lr_interval"), ("batch_law", "batch_size_tokens_interval")):
        law = fit[law_name]
        if law["determined"]:
            low, high = prediction[key]
            assert 0 < low < high
        else:
            assert prediction[key] is None and law["undetermined"]
            assert all(interval is None for interval in law["intervals"].values())
    assert prediction["lr"] > 0
    assert prediction["batch_size_sequences"] == max(1, round(prediction["batch_size_tokens"] / 256))
