"""The watchdog of a local cluster (execute/watchdog.py), without Ray: a driver that dies by
SIGKILL, during its cluster's start-up or after, takes the cluster's process trees with it,
and nothing else."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

# A stand-in driver. Its processes run in sessions of their own, as Ray's agents outlive
# their driver: one it had before the cluster (not the cluster's), a tree started while the
# "cluster starts" (a shell and its two children), and with "declared", one started after the
# cluster's roots were declared (not the cluster's either). Prints the PIDs, then waits.
DRIVER = """
import subprocess, sys, time
from sweeper.execute.watchdog import declare_roots, start_watchdog

def start(command):
    return subprocess.Popen(command, start_new_session=True)

earlier = start(["sleep", "300"])
watchdog = start_watchdog({earlier.pid})
tree = start(["sh", "-c", "sleep 300 & sleep 300 & wait"])
time.sleep(1.5)  # the watchdog has seen the whole tree
others = [earlier.pid]
if sys.argv[1] == "declared":
    declare_roots(watchdog, [tree.pid])
    others.append(start(["sleep", "300"]).pid)
    time.sleep(1.0)
print(tree.pid, *others, flush=True)
time.sleep(300)
"""


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("moment", ["starting", "declared"])
def test_a_killed_driver_takes_its_cluster_with_it_and_nothing_else(moment: str) -> None:
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, moment], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    cluster: list[psutil.Process] = []
    others: list[psutil.Process] = []
    try:
        assert driver.stdout is not None
        root, *other_pids = (int(pid) for pid in driver.stdout.readline().split())
        cluster = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
        others = [psutil.Process(pid) for pid in other_pids]
        assert len(cluster) == 3 and len(others) == (2 if moment == "declared" else 1)
        assert all(alive(p) for p in cluster + others)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
        deadline = time.time() + 10
        while any(alive(p) for p in cluster) and time.time() < deadline:
            time.sleep(0.1)
        assert not [p.pid for p in cluster if alive(p)], "the cluster outlived its driver"
        assert all(alive(p) for p in others), "the watchdog killed a process not of the cluster"
    finally:
        for process in cluster + others:  # psutil refuses a PID that was reused
            with contextlib.suppress(psutil.Error):
                process.kill()
        if driver.poll() is None:
            driver.kill()
            driver.wait()
