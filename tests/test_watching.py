"""What a person watches and shares, on the session's real smoke sweep (conftest.smoke_run):
the live terminal view, live progress in progress.json, the Optuna study as optuna-dashboard
serves it, W&B offline run files, runs on a real MLflow server, the Parquet timestamps, the
HTML report in a real headless Chromium, and `dashboard` after the sweep."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.conftest import SweepRun
from tests.watching_tools import chromium, free_port, open_in_chromium, wandb_records

pytestmark = pytest.mark.slow
PLANNED = 24


def sweeper(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sweeper", *args], capture_output=True, text=True, timeout=timeout
    )


def test_terminal_shows_a_progress_bar_with_eta(smoke_run: SweepRun) -> None:
    assert smoke_run.returncode == 0, smoke_run.stderr[-3000:]
    shown = smoke_run.stdout
    assert "━" in shown, shown[-2000:]  # rich's bar
    assert f"{PLANNED}/{PLANNED}" in shown and "ETA" in shown and "elapsed" in shown
    # A measured ETA (m:ss), not only the placeholder shown before any trial progressed.
    assert any(part.split()[0].count(":") == 1 for part in shown.split("ETA ")[1:]), shown[-2000:]
    assert "running" in shown and "pending" in shown


def test_running_trials_report_step_loss_and_elapsed(smoke_run: SweepRun) -> None:
    assert smoke_run.live, "no running trial reported its progress while the sweep ran"
    for entry in smoke_run.live:
        assert 1 <= entry["step"] <= entry["steps"]
        assert entry["elapsed_s"] >= 0 and entry["train_loss"] > 0


def test_optuna_dashboard_serves_learning_curves_and_sizes(smoke_run: SweepRun) -> None:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna_dashboard import wsgi

    storage = JournalStorage(JournalFileBackend(str(smoke_run.run_dir / "optuna.journal")))

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args) -> None:  # noqa: ANN002
            pass

    server = make_server("127.0.0.1", free_port(), wsgi(storage), handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        with urllib.request.urlopen(f"{base}/api/studies", timeout=30) as answer:
            studies = json.load(answer)["study_summaries"]
        study_id = next(s["study_id"] for s in studies if s["study_name"] == "smoke")
        with urllib.request.urlopen(f"{base}/api/studies/{study_id}?after=0", timeout=30) as answer:
            study = json.load(answer)
    finally:
        server.shutdown()
    trials = pd.read_parquet(smoke_run.run_dir / "trials").set_index("trial_id")
    complete = [t for t in study["trials"] if t["state"] == "Complete"]
    assert len(complete) == (trials["status"] == "complete").sum()
    assert study["has_intermediate_values"]
    for trial in complete:
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        row = trials.loc[attrs["trial_id"]]
        assert (
            int(attrs["n_params"]) == row["n_params"] and int(attrs["tokens_budget"]) == row["tokens_budget"]
        )
        assert int(attrs["batch_size_tokens"]) == row["batch_size_tokens"]
        curve = {point["step"]: float(point["value"]) for point in trial["intermediate_values"]}
        # The last reported value is the trial's headline loss, at the tokens it trained.
        assert max(curve) == row["tokens"]
        assert curve[row["tokens"]] == pytest.approx(row["loss"], rel=1e-12)


def test_wandb_offline_has_one_run_per_trial(smoke_run: SweepRun) -> None:
    files = sorted((smoke_run.run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == PLANNED
    trials = pd.read_parquet(smoke_run.run_dir / "trials").set_index("trial_id")
    steps = pd.read_parquet(smoke_run.run_dir / "curves").groupby("trial_id").size()
    seen = set()
    for path in files:
        records = wandb_records(path)
        run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
        config = {item.key: json.loads(item.value_json) for item in run.config.update}
        assert run.run_group == "smoke"
        trial_id = config["trial_id"]
        seen.add(trial_id)
        assert config["n_params"] == trials.loc[trial_id, "n_params"]
        history = [r for r in records if r.WhichOneof("record_type") == "history"]
        assert len(history) == steps[trial_id]
        exit_code = next(r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit")
        assert exit_code == (1 if trials.loc[trial_id, "status"] == "failed" else 0)
    assert seen == set(trials.index)


def test_mlflow_server_has_one_run_per_trial(smoke_run: SweepRun) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=smoke_run.mlflow_uri)
    experiment = client.get_experiment_by_name("smoke")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    trials = pd.read_parquet(smoke_run.run_dir / "trials").set_index("trial_id")
    steps = pd.read_parquet(smoke_run.run_dir / "curves").groupby("trial_id").size()
    assert sorted(run.data.tags["trial_id"] for run in runs) == sorted(trials.index)
    for run in runs:
        row = trials.loc[run.data.tags["trial_id"]]
        assert run.info.status == ("FAILED" if row["status"] == "failed" else "FINISHED")
        assert run.data.tags["status"] == row["status"]
        assert int(run.data.params["n_params"]) == row["n_params"]
        assert len(client.get_metric_history(run.info.run_id, "train_loss")) == steps[row.name]
        if row["status"] == "complete":
            assert run.data.metrics["loss"] == pytest.approx(row["loss"], rel=1e-12)


def test_trial_times_are_parquet_timestamps(smoke_run: SweepRun) -> None:
    schema = pq.read_schema(next((smoke_run.run_dir / "trials").glob("*.parquet")))
    for name in ("started_at", "ended_at"):
        assert str(schema.field(name).type) == "timestamp[us, tz=UTC]"
    trials = pd.read_parquet(smoke_run.run_dir / "trials")
    assert (trials["ended_at"] >= trials["started_at"]).all()


@pytest.mark.skipif(
    chromium() is None,
    reason="no Chromium on this machine: .ci/run installs "
    "Debian's chromium package; a machine without apt cannot render the page",
)
def test_report_renders_in_headless_chromium(smoke_run: SweepRun, tmp_path) -> None:
    page = tmp_path / "report.html"
    written = sweeper("report", str(smoke_run.run_dir), "--out", str(page), "--bootstrap", "100")
    assert written.returncode == 0, written.stderr[-2000:]
    html = page.read_text()
    assert "http://" not in html and "https://" not in html  # nothing to fetch
    seen = open_in_chromium(page)
    assert not seen["console_errors"] and not seen["exceptions"], seen["console_errors"] + seen["exceptions"]
    assert not seen["failed_loads"] and all(url.startswith(("file:", "data:")) for url in seen["requests"])
    names = {image["alt"] for image in seen["images"]}
    assert {"loss_vs_lr", "heatmaps", "laws", "regret"} <= names
    assert all(image["complete"] and image["width"] > 300 for image in seen["images"])
    (tmp_path / "report.png").write_bytes(seen["png"])
    import numpy as np
    from matplotlib.image import imread

    pixels = imread(tmp_path / "report.png")
    assert pixels.shape[0] >= 2000  # the whole page, not only the first screen
    assert np.std(pixels[..., :3]) > 0.05
    for section in (
        "Warnings",
        "Fitted laws",
        "Landscapes of the cells",
        "Held-out evaluation",
        "Loss law",
        "Predictions",
    ):
        assert f"<h2>{section}</h2>" in html


def test_dashboard_after_the_sweep_points_to_the_report(smoke_run: SweepRun) -> None:
    answer = sweeper("dashboard", str(smoke_run.run_dir))
    assert answer.returncode == 1
    assert "not running" in answer.stderr and "report" in answer.stderr
    assert "http" not in answer.stdout
