"""Real faults, never mocks: workers and drivers killed with SIGKILL, files truncated on
disk, trials that raise and diverge. Each test starts real `sweeper` processes on a real
local Ray and reads the real run folder afterwards."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import yaml

pytestmark = pytest.mark.slow

# Four trials of a few seconds each: long enough to be caught mid-flight.
SLOW_RECIPE = {
    "name": "slow",
    "models": [{"d_model": 32, "n_layers": 2, "n_heads": 2, "seq_len": 64}],
    "tokens": {"absolute": [200000]},
    "learning_rates": {"values": [0.01, 0.02]},
    "batch_sizes": [8, 16],
    "data": {"source": "builtin", "max_bytes": 1000000},
    "resources": {"cpus": 1, "max_retries": 2},
}


def write_recipe(tmp_path: Path, recipe: dict, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe))
    return path


def start_driver(*args: str) -> subprocess.Popen:
    # Its own process session (setsid), so the test can kill the driver with everything it started, as a
    # crash of the driver's machine would.
    return subprocess.Popen(
        [sys.executable, "-m", "sweeper", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def sweeper(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sweeper", *args], capture_output=True, text=True, timeout=timeout
    )


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def recorded(run_dir: Path) -> dict[str, float]:
    """Trial id -> end time of each trial recorded in the run folder (parts or compacted)."""
    from sweeper.results import read_trials

    table = read_trials(run_dir, columns=["ended_at"]).table
    return dict(zip(table.column("trial_id").to_pylist(), table.column("ended_at").to_pylist()))


def part_files(run_dir: Path) -> list[Path]:
    folder = run_dir / "trials"
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else []


def trial_worker_pids() -> list[int]:
    # Ray titles a worker process after the task it runs: "ray::trial <label>" or "ray::fused x<K> ...".
    listing = subprocess.run(["pgrep", "-f", "^ray::(trial|fused) "], capture_output=True, text=True)
    return [int(pid) for pid in listing.stdout.split()]


def alive(processes: list[psutil.Process]) -> list[str]:
    """Those of ``processes`` still running (a zombie has ended), as 'pid name'."""
    running = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                running.append(f"{process.pid} {process.name()}")
    return running


def kill_session(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def test_worker_killed_mid_trial_is_retried_and_recorded_once(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    driver = start_driver("submit", str(write_recipe(tmp_path, SLOW_RECIPE)), "--out", str(run_dir))
    try:
        wait_for(lambda: trial_worker_pids(), 90, "a trial to start on a Ray worker")
        time.sleep(1.0)  # mid-trial, not at its first step
        victim = trial_worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        stdout, stderr = driver.communicate(timeout=240)
    finally:
        if driver.poll() is None:
            kill_session(driver)
    assert driver.returncode == 0, stderr[-3000:]
    trials = pd.read_parquet(run_dir / "trials")
    assert len(trials) == 4 and trials["trial_id"].is_unique
    assert set(trials["status"]) == {"complete"}
    curves = pd.read_parquet(run_dir / "curves")
    assert not curves.duplicated(["trial_id", "step"]).any()
    assert (
        curves.groupby("trial_id")["step"].max().sort_index()
        == trials.set_index("trial_id")["steps"].sort_index()
    ).all()


def test_driver_killed_then_resume_finishes_without_rerunning(tmp_path: Path) -> None:
    # 6 trials, unfused so that they finish two at a time over several rounds, each long
    # enough (800k tokens) that the sweep is still running after two are recorded, the
    # driver's results buffer (~2 s) has flushed and a second driver has been refused.
    recipe = {
        **SLOW_RECIPE,
        "tokens": {"absolute": [800000]},
        "learning_rates": {"values": [0.005, 0.01, 0.02]},
        "fuse": "off",
    }
    recipe_path = write_recipe(tmp_path, recipe)
    run_dir = tmp_path / "run"
    driver = start_driver("submit", str(recipe_path), "--out", str(run_dir))
    cluster: list[psutil.Process] = []
    try:
        wait_for(lambda: len(recorded(run_dir)) >= 2, 120, "two recorded trials")
        # A second driver on the same folder refuses at once, naming the holder.
        second = sweeper("submit", str(recipe_path), "--out", str(run_dir), timeout=60)
        assert second.returncode == 3
        assert "in use by another sweeper driver" in second.stderr and "Traceback" not in second.stderr
        # SIGKILL to the driver alone: the local cluster it started (every process below it,
        # found by PID, never by name: other clusters may run on this machine) goes with it.
        cluster = psutil.Process(driver.pid).children(recursive=True)
        assert any("raylet" in " ".join(p.cmdline()) for p in cluster)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
        deadline = time.time() + 15  # Ray's agents alone took 40-80 s before the watchdog
        while alive(cluster) and time.time() < deadline:
            time.sleep(0.2)
        assert not alive(cluster), f"outlived the driver by 15 s: {alive(cluster)}"
    finally:
        kill_session(driver)
        for process in cluster:  # on failure only; psutil refuses a PID that was reused
            with contextlib.suppress(psutil.Error):
                process.kill()
    before = recorded(run_dir)
    assert 2 <= len(before) < 6
    status = sweeper("status", str(run_dir), "--json")
    assert "stopped before finishing" in json.loads(status.stdout)["driver"]

    # The dead driver's lock is gone with it: resume starts at once.
    resumed = sweeper("resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = recorded(run_dir)
    assert len(after) == 6
    assert all(after[trial_id] == ended for trial_id, ended in before.items()), "a recorded trial ran again"
    assert len(part_files(run_dir)) == 1  # compacted when the sweep finished

    # The same trial ids as an uninterrupted run of the same recipe would produce.
    from sweeper.plan import plan_trials
    from sweeper.recipe import parse_recipe
    from sweeper.train import data_identity

    planned = parse_recipe(recipe)
    expected = {t.trial_id for t in plan_trials(planned, data_identity(planned.data))}
    assert set(pd.read_parquet(run_dir / "trials")["trial_id"]) == expected


def test_diverged_trials_are_data_not_crashes(tmp_path: Path) -> None:
    # lr 50 without clipping blows up (diverged). Token ids up to 299 on a vocab-512 shape.
    tokens = np.random.default_rng(0).integers(0, 300, size=60000, dtype=np.uint16)
    token_file = tmp_path / "train.bin"
    tokens.tofile(token_file)
    recipe = {
        "name": "faults",
        "models": [{"d_model": 16, "n_layers": 1, "n_heads": 2, "seq_len": 32, "vocab_size": 512}],
        "tokens": {"absolute": [8000]},
        "learning_rates": {"values": [0.01, 50.0]},
        "batch_sizes": [4],
        "optimizer": {"grad_clip": 0.0},
        "data": {"source": "tokens", "path": str(token_file), "dtype": "uint16"},
    }
    run_dir = tmp_path / "run"
    result = sweeper("submit", str(write_recipe(tmp_path, recipe)), "--out", str(run_dir))
    assert result.returncode == 0, result.stderr[-2000:]
    trials = pd.read_parquet(run_dir / "trials").set_index("lr")
    assert trials.loc[0.01, "status"] == "complete"
    assert trials.loc[50.0, "status"] == "diverged" and trials.loc[50.0, "diverged_step"] >= 1


def test_truncated_part_file_is_reported_and_resume_repairs_it(tmp_path: Path) -> None:
    recipe = {**SLOW_RECIPE, "tokens": {"absolute": [20000]}, "name": "small"}
    run_dir = tmp_path / "run"
    recipe_path = write_recipe(tmp_path, recipe)
    first = sweeper("submit", str(recipe_path), "--out", str(run_dir))
    assert first.returncode == 0, first.stderr[-2000:]
    victim = part_files(run_dir)[0]
    lost = pd.read_parquet(victim).shape[0]  # the sweep's trials, compacted into one file
    assert lost >= 1
    victim.write_bytes(victim.read_bytes()[:100])  # a copy cut short

    status = sweeper("status", str(run_dir), "--json")
    assert status.returncode == 0
    assert str(victim) in status.stderr and "unreadable" in status.stderr
    report = json.loads(status.stdout)
    assert report["counts"]["complete"] == 4 - lost and len(report["problems"]) == 1

    resumed = sweeper("resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{lost} to run" in resumed.stdout
    assert str(victim) in resumed.stderr and "its trial runs again" in resumed.stderr
    assert len(pd.read_parquet(run_dir / "trials")) == 4
    assert (run_dir / "trials" / "_damaged" / victim.name).is_file()  # set aside, not deleted
    assert "unreadable" not in sweeper("status", str(run_dir), "--json").stderr  # no longer reported


def test_trials_that_cannot_fit_memory_are_refused_before_anything_runs(tmp_path: Path) -> None:
    recipe = {
        **SLOW_RECIPE,
        "models": [{"d_model": 1024, "n_layers": 24, "n_heads": 16, "seq_len": 2048}],
        "batch_sizes": [64],
        "resources": {"cpus": 1, "memory_gb": 4},
    }
    run_dir = tmp_path / "run"
    result = sweeper("submit", str(write_recipe(tmp_path, recipe)), "--out", str(run_dir), timeout=120)
    assert result.returncode == 2
    assert "GiB" in result.stderr and "memory_gb" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not run_dir.exists()


# Put on the PYTHONPATH of a sweep (its driver, and through it the Ray workers), this makes
# the training of one trial (lr 0.02, batch 8) raise while the file FAULT_FLAG names exists:
# a fault inside training, injected without changing the package.
FAULT_HOOK = """
import importlib.abc, importlib.util, os, sys

class InjectFault(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "sweeper.train.loop":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            train = module._train

            def faulty(spec, *args, **kwargs):
                if spec.lr == 0.02 and spec.batch_size == 8 and os.path.exists(os.environ["FAULT_FLAG"]):
                    raise OSError("injected fault: the data disk went away")
                return train(spec, *args, **kwargs)

            module._train = faulty

        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, InjectFault())
"""


def test_a_trial_that_raises_is_recorded_failed_and_resume_runs_it_again(tmp_path: Path) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FAULT_HOOK)
    flag = tmp_path / "fault-on"
    flag.touch()
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]),
        "FAULT_FLAG": str(flag),
    }
    recipe = {**SLOW_RECIPE, "name": "raises", "tokens": {"absolute": [20000]}, "fuse": "off"}
    recipe_path = write_recipe(tmp_path, recipe)
    run_dir = tmp_path / "run"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "sweeper", *args],
            capture_output=True,
            text=True,
            timeout=300,
            env=environment,
        )

    first = run("submit", str(recipe_path), "--out", str(run_dir))
    # The other trials finish; the exit code and the last line say a trial failed.
    assert first.returncode == 1, first.stderr[-3000:]
    assert "Traceback" not in first.stderr
    assert "error: 1 trial(s) failed" in first.stderr.strip().splitlines()[-1]
    trials = pd.read_parquet(run_dir / "trials").set_index(["lr", "batch_size"])
    assert len(trials) == 4
    failed = trials.loc[(0.02, 8)]
    assert failed["status"] == "failed" and "OSError: injected fault" in failed["error"]
    assert set(trials.drop(index=(0.02, 8))["status"]) == {"complete"}
    before = recorded(run_dir)

    status = run("status", str(run_dir), "--json")
    report = json.loads(status.stdout)
    assert report["counts"]["failed"] == 1 and report["counts"]["complete"] == 3
    assert report["pending"] == 0, "a failed trial is failed, not pending"
    text = run("status", str(run_dir)).stdout
    assert "3 complete, 1 failed" in text and "pending" not in text and "runs them again" in text

    flag.unlink()  # the fault is gone: resume runs the failed trial again, and only it
    resumed = run("resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "1 to run" in resumed.stdout
    trials = pd.read_parquet(run_dir / "trials")
    latest = trials.sort_values("attempt").groupby("trial_id").last()
    assert set(latest["status"]) == {"complete"} and len(latest) == 4
    assert latest["attempt"].max() == 2 and (latest["attempt"] == 2).sum() == 1
    after = recorded(run_dir)
    rerun = [trial_id for trial_id in after if after[trial_id] != before[trial_id]]
    assert len(rerun) == 1 and latest.loc[rerun[0], "lr"] == 0.02, "a complete trial ran again"
    assert json.loads(run("status", str(run_dir), "--json").stdout)["counts"]["failed"] == 0
