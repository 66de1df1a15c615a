"""Shared fixtures: recipes as dicts, the repository's paths, and the one smoke sweep that
the end-to-end and watching tests read."""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
STEPLAW_CSV = REPO.parent / "shared" / "data" / "steplaw" / "moe_lr_bs_loss.csv"

MINIMAL_RECIPE = {
    "name": "tiny",
    "models": [{"d_model": 16, "n_layers": 1, "n_heads": 2, "seq_len": 16}],
    "tokens": {"absolute": [4096]},
    "learning_rates": {"grid": {"min": 1e-3, "max": 1e-2, "count": 2}},
    "batch_sizes": [4],
}


@pytest.fixture
def minimal_recipe() -> dict:
    return copy.deepcopy(MINIMAL_RECIPE)


@dataclass
class SweepRun:
    run_dir: Path
    returncode: int
    stdout: str  # what the terminal showed, escape sequences removed
    stderr: str
    mid_sweep_rows: list[int]
    live: list[dict] = field(default_factory=list)  # progress.json running entries with a step
    mlflow_uri: str | None = None


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on a free loopback port, for the session."""
    from tests.watching_tools import MlflowServer

    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, mlflow_server) -> SweepRun:
    """The smoke sweep, submitted as a person would on a terminal (stdout a pseudo-terminal),
    logging every trial to W&B (offline) and to the MLflow server. While it runs, the test
    reads the results with pandas and the driver's progress.json, as `status` does."""
    from tests.watching_tools import TerminalRun

    run_dir = tmp_path_factory.mktemp("e2e") / "smoke"
    # The smoke ladder with 4x the tokens. Fused, its tasks last under 2 s, about what a
    # trial's first progress report takes to reach progress.json (the board's worker starts
    # with the first trials, and the driver reads it a round late): too short to be seen
    # running. At 4x the longest tasks train for several seconds.
    smoke = yaml.safe_load((RECIPES / "smoke.yaml").read_text())
    recipe_file = run_dir.parent / "smoke.yaml"
    recipe_file.write_text(
        yaml.safe_dump(smoke | {"tokens": {"absolute": [4 * d for d in smoke["tokens"]["absolute"]]}})
    )
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "TERM": "xterm-256color",
        "COLUMNS": "120",
    }
    env.pop("CI", None)  # rich draws no live bars when it thinks it runs under CI
    terminal = TerminalRun(
        [
            sys.executable,
            "-m",
            "sweeper",
            "submit",
            str(recipe_file),
            "--out",
            str(run_dir),
            "--log-to",
            "wandb:sweeper-tests",
            "--log-to",
            f"mlflow:{mlflow_server.uri}",
        ],
        env,
    )
    mid_sweep_rows, live = [], []
    deadline = time.time() + 400
    while terminal.process.poll() is None and time.time() < deadline:
        trials = run_dir / "trials"
        if trials.is_dir() and any(p.suffix == ".parquet" for p in trials.iterdir()):
            # What a user does mid-sweep: read the folder with pandas.
            mid_sweep_rows.append(len(pd.read_parquet(trials)))
        try:
            progress = json.loads((run_dir / "progress.json").read_text())
            live += [entry for entry in progress.get("running", []) if "step" in entry]
        except (OSError, ValueError):
            pass
        terminal.pump(0.5)
    returncode, stdout, stderr = terminal.finish(timeout=max(1, deadline - time.time()))
    return SweepRun(run_dir, returncode, stdout, stderr, mid_sweep_rows, live, mlflow_server.uri)
