"""WSD branching through the driver: a real sweep on a real local Ray, a worker killed
mid-task, and every budget recorded once with its own id, row and curve."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from sweeper.errors import SweeperError
from sweeper.plan import estimate_group_memory_bytes, estimate_trial_memory_bytes, plan_trials
from sweeper.recipe import parse_recipe
from sweeper.sweep import check_memory
from sweeper.train.branching import branch_groups, fork_points
from tests.conftest import MINIMAL_RECIPE
from tests.test_failures import kill_session, start_driver, sweeper, wait_for, write_recipe

# One run of 4 budgets (50, 100, 200, 400 steps of 8 x 64 tokens), unfused: the budgets go
# to one task all the same, and it lasts a few seconds, so a worker can be killed in it.
WSD_RECIPE = {
    "name": "wsd",
    "models": [{"d_model": 32, "n_layers": 2, "n_heads": 2, "seq_len": 64}],
    "tokens": {"absolute": [25600, 51200, 102400, 204800]},
    "learning_rates": {"values": [0.01]},
    "batch_sizes": [8],
    "schedule": {"kind": "wsd", "warmup_steps": 10, "decay_fraction": 0.2},
    "evaluation": {"every_steps": 40, "val_batches": 2},
    "data": {"source": "builtin", "max_bytes": 1000000},
    "resources": {"cpus": 1, "max_retries": 2},
    "fuse": "off",
}


def test_the_memory_check_counts_the_branch_copies() -> None:
    recipe = parse_recipe(
        {
            **MINIMAL_RECIPE,
            "tokens": {"absolute": [4096, 8192, 16384]},
            "schedule": {"kind": "wsd", "warmup_steps": 2},
        }
    )
    specs = plan_trials(recipe, "d")
    groups = branch_groups(specs)
    assert [copies for _, copies in groups] == [2, 2]  # one per lr: a trunk and one branch at a time
    alone, with_branch = estimate_trial_memory_bytes(specs[0]), estimate_group_memory_bytes(specs[0], 2)
    between = parse_recipe(
        {**recipe.model_dump(), "resources": {"memory_gb": (alone + with_branch) / 2 / 2**30}}
    )
    check_memory(specs, between)  # each trial alone fits
    with pytest.raises(SweeperError, match="wsd branch copies"):
        check_memory(specs, between, groups)


def task_workers(driver: subprocess.Popen) -> list[int]:
    """Ray workers running a trial task for ``driver``'s own cluster: its session only (the
    driver starts a process session of its own), never another Ray on the same machine."""
    listing = subprocess.run(
        ["pgrep", "-s", str(driver.pid), "-f", "^ray::(trial|fused) "], capture_output=True, text=True
    )
    return [int(pid) for pid in listing.stdout.split()]


@pytest.mark.slow
def test_a_branching_sweep_records_every_budget_once_even_when_its_worker_dies(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    driver = start_driver("submit", str(write_recipe(tmp_path, WSD_RECIPE)), "--out", str(run_dir))
    try:
        wait_for(lambda: task_workers(driver), 90, "the branching task to start on a Ray worker")
        time.sleep(1.0)
        for pid in task_workers(driver)[:1]:  # none left if the task already ended
            os.kill(pid, signal.SIGKILL)  # Ray re-runs the whole task
        stdout, stderr = driver.communicate(timeout=240)
    finally:
        if driver.poll() is None:
            kill_session(driver)
    assert driver.returncode == 0, stderr[-3000:]
    assert "wsd branching: 3 trials fork" in stdout and "saved" in stdout

    from sweeper.train import data_identity
    from sweeper.train.fused import run_fused

    recipe = parse_recipe(WSD_RECIPE)
    specs = plan_trials(recipe, data_identity(recipe.data))
    trials = pd.read_parquet(run_dir / "trials").set_index("trial_id")
    assert sorted(trials.index) == sorted(s.trial_id for s in specs)  # the unbranched run's ids
    assert set(trials["status"]) == {"complete"}
    curves = pd.read_parquet(run_dir / "curves")
    assert not curves.duplicated(["trial_id", "step"]).any()
    by_trial = {trial_id: group.sort_values("step") for trial_id, group in curves.groupby("trial_id")}

    # Against the same budgets trained unbranched, here, on this machine.
    unbranched = run_fused(specs)
    forks = fork_points(specs)
    assert len(forks) == 3
    for member, (spec, alone) in enumerate(zip(specs, unbranched)):
        assert abs(trials.loc[spec.trial_id, "loss"] - alone.final_val_loss) <= 1e-5
        curve = by_trial[spec.trial_id]
        assert list(curve["step"]) == list(range(1, spec.steps + 1))
        assert list(curve["val_loss"].notna()) == [p.val_loss is not None for p in alone.curve]
        if member in forks:  # the trunk's steps up to the fork, point for point
            parent, at = forks[member]
            trunk = by_trial[specs[parent].trial_id]
            assert list(curve["train_loss"][:at]) == list(trunk["train_loss"][:at])

    status = sweeper("status", str(run_dir), "--json")
    training = json.loads(status.stdout)["training"]
    assert (training["budgets"], training["branched"]) == (4, 3)
    assert training["tokens_to_train"] == (400 + 10 + 20 + 40) * 8 * 64
    assert "plan: wsd branching" in sweeper("status", str(run_dir)).stdout
