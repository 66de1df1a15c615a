"""A law-guided sweep on a real local Ray, end to end: its replay chooses exactly the trials the
real sweep chose (proposals depend on results only, never on timing), a driver killed
mid-sweep and resumed ends with the uninterrupted sweep's trials, and a finished sweep
submitted again says so without starting Ray."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sweeper.recipe import load_recipe
from sweeper.replay import run_replay
from tests.test_failures import kill_session, recorded, start_driver, sweeper, wait_for

pytestmark = pytest.mark.slow

RECIPE = {
    "name": "adaptive-smoke",
    # 3 shapes x 2 budgets = 6 cells, so the laws are fitted (after 4 cells) and place the rest.
    "models": [{"d_model": d, "n_layers": 1, "n_heads": 2, "seq_len": 32} for d in (16, 32, 48)],
    "tokens": {"absolute": [8000, 16000]},
    "learning_rates": {"grid": {"min": 0.003, "max": 0.024, "count": 4}},
    "batch_sizes": [4, 8],
    "schedule": {"kind": "cosine", "warmup_fraction": 0.1, "min_lr_ratio": 0.1},
    "evaluation": {"every_steps": 0, "val_batches": 4},
    "data": {"source": "builtin", "max_bytes": 1000000},
    "search": {"kind": "adaptive", "budget": 0.6, "lookahead": 1},
    # A fused task's losses differ from single runs' in the last digits (docs/demo.md), and
    # which siblings fuse depends on what a driver had proposed when it died; unfused, the
    # same trial gives the same loss in any driver, so two sweeps can be compared trial for trial.
    "fuse": "off",
}
GRID = 6 * 4 * 2


@dataclass
class FinishedSweep:
    recipe_file: Path
    run_dir: Path
    trials: pd.DataFrame


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> FinishedSweep:
    """One adaptive sweep run to the end without interruption (the reference of this module)."""
    folder = tmp_path_factory.mktemp("adaptive")
    recipe_file = folder / "adaptive.yaml"
    recipe_file.write_text(yaml.safe_dump(RECIPE))
    run_dir = folder / "run"
    result = subprocess.run(
        [sys.executable, "-m", "sweeper", "submit", str(recipe_file), "--out", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return FinishedSweep(recipe_file, run_dir, pd.read_parquet(run_dir / "trials"))


def test_adaptive_sweep_on_ray_and_its_replay_choose_the_same_trials(
    uninterrupted: FinishedSweep, tmp_path: Path
) -> None:
    trials = uninterrupted.trials
    assert len(trials) <= 0.6 * GRID  # the budget holds
    assert trials.cell_id.nunique() >= 4  # the ladder is walked, not one cell exhausted
    assert set(trials.status) <= {"complete", "diverged"}

    replayed = run_replay(
        uninterrupted.run_dir, tmp_path / "replay", recipe=load_recipe(uninterrupted.recipe_file)
    )
    assert not replayed.missing  # every proposal of the replay was a trial the real sweep ran
    again = pd.read_parquet(tmp_path / "replay" / "trials")
    assert set(again.trial_id) == set(trials.trial_id)


def test_finished_adaptive_sweep_submitted_again_says_so_without_starting_ray(
    uninterrupted: FinishedSweep,
) -> None:
    # Nothing listens on port 1: a driver that tried to attach to Ray there would fail.
    result = sweeper(
        "submit",
        str(uninterrupted.recipe_file),
        "--out",
        str(uninterrupted.run_dir),
        "--address",
        "127.0.0.1:1",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "finished already" in result.stdout and "(0 to run)" in result.stdout, result.stdout
    after = pd.read_parquet(uninterrupted.run_dir / "trials")
    assert (
        after.set_index("trial_id")["ended_at"]
        .sort_index()
        .equals(uninterrupted.trials.set_index("trial_id")["ended_at"].sort_index())
    )


def test_adaptive_driver_killed_mid_sweep_then_resumed_ends_with_the_uninterrupted_trials(
    uninterrupted: FinishedSweep, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    driver = start_driver("submit", str(uninterrupted.recipe_file), "--out", str(run_dir))
    try:
        wait_for(lambda: len(recorded(run_dir)) >= 4, 180, "four recorded trials")
    finally:
        kill_session(driver)  # SIGKILL to the driver and the local cluster it started
    before = recorded(run_dir)
    assert 4 <= len(before) < len(uninterrupted.trials), "the kill came after the sweep had ended"

    resumed = sweeper("resume", str(run_dir), timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = recorded(run_dir)
    assert all(after[trial_id] == ended for trial_id, ended in before.items()), "a recorded trial ran again"
    assert set(after) == set(uninterrupted.trials.trial_id)
