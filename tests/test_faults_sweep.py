"""Faults and exposure of a real local sweep: what the sweep listens on, a full disk in the
middle of it, and a recipe no node can hold. Real `sweeper` processes on a real local Ray."""

from __future__ import annotations

import ipaddress
import resource
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from tests.test_failures import (
    SLOW_RECIPE,
    kill_session,
    recorded,
    start_driver,
    sweeper,
    wait_for,
    write_recipe,
)

pytestmark = pytest.mark.slow

# Servers of a local sweep that Ray cannot bind to the loopback, with what protects them
# (docs/failures.md, "What a local sweep exposes"). Empty: with Ray 2.60 every server binds
# to 127.0.0.1. A server that appears here must be named in the docs first.
EXPOSED_BY_RAY: dict[str, str] = {}


def listening_sockets(root_pid: int) -> list[tuple[str, int, str]]:
    """(address, port, process name) of every listening TCP socket of ``root_pid`` and all
    its descendants (the driver, the Ray processes it started, their workers)."""
    root = psutil.Process(root_pid)
    found = []
    for process in [root, *root.children(recursive=True)]:
        try:
            name = " ".join(process.cmdline()) or process.name()
            for connection in process.net_connections(kind="tcp"):
                if connection.status == psutil.CONN_LISTEN:
                    found.append((connection.laddr.ip, connection.laddr.port, name))
        except psutil.Error:
            continue  # a worker that ended while being listed
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def test_local_sweep_listens_on_loopback_and_a_full_disk_leaves_a_resumable_run(tmp_path: Path) -> None:
    recipe = {**SLOW_RECIPE, "fuse": "off"}
    recipe_path = write_recipe(tmp_path, recipe)
    run_dir = tmp_path / "run"
    driver = start_driver("submit", str(recipe_path), "--out", str(run_dir))
    try:
        wait_for(lambda: (run_dir / "progress.json").is_file(), 120, "the sweep to start its trials")
        time.sleep(2.0)  # the workers of the first trials are up
        sockets = listening_sockets(driver.pid)
        exposed = [s for s in sockets if not is_loopback(s[0]) and not any(k in s[2] for k in EXPOSED_BY_RAY)]
        assert not exposed, f"listening beyond the loopback: {exposed}"
        # The sweep's own servers were seen: the dashboard, the GCS and the raylet.
        names = " ".join(s[2] for s in sockets).lower()
        assert "gcs_server" in names and "raylet" in names and "dashboard" in names, sockets

        # The disk fills: from now on the driver cannot grow any file past 2 KiB (the kernel
        # answers EFBIG, as it answers ENOSPC on a full disk). Ray's own processes keep going.
        resource.prlimit(driver.pid, resource.RLIMIT_FSIZE, (2048, 2048))
        stdout, stderr = driver.communicate(timeout=240)
    finally:
        if driver.poll() is None:
            kill_session(driver)
    assert driver.returncode == 2, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot write" in errors[0] and "sweeper resume" in errors[0], stderr[-3000:]
    assert "Traceback" not in stderr
    before = {p.name: p.stat().st_mtime_ns for p in recorded(run_dir)}
    assert len(before) < 4
    assert not list((run_dir / "trials").glob(".*.tmp")) if (run_dir / "trials").is_dir() else True

    resumed = sweeper("resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = pd.read_parquet(run_dir / "trials")
    assert len(trials) == 4 and trials["trial_id"].is_unique and set(trials["status"]) == {"complete"}
    after = {p.name: p.stat().st_mtime_ns for p in recorded(run_dir)}
    assert all(after[name] == mtime for name, mtime in before.items()), "a recorded trial ran again"


def test_a_recipe_no_node_can_hold_writes_nothing(tmp_path: Path) -> None:
    recipe = {**SLOW_RECIPE, "resources": {"cpus": 1, "gpus": 64}}
    run_dir = tmp_path / "run"
    result = sweeper("submit", str(write_recipe(tmp_path, recipe)), "--out", str(run_dir), timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no node can ever run a trial" in errors[0], result.stderr[-2000:]
    assert not run_dir.exists()
