"""The watchdog of a local cluster (execute/watchdog.py), without Ray: a driver that dies by
SIGKILL takes the process trees it watches with it, and nothing else."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import psutil

# A stand-in driver: starts a tree (a shell and its two children) in a session of its own,
# as Ray's processes would outlive it, puts the watchdog over it, then waits to be killed.
DRIVER = """
import subprocess, sys, time
from sweeper.execute.watchdog import start_watchdog
root = subprocess.Popen(["sh", "-c", "sleep 300 & sleep 300 & wait"], start_new_session=True)
time.sleep(0.5)  # the shell has started its children
start_watchdog([root.pid])
time.sleep(1.5)  # the watchdog has seen the whole tree
print(root.pid, flush=True)
time.sleep(300)
"""


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_killed_driver_takes_the_watched_trees_with_it_and_nothing_else() -> None:
    bystander = subprocess.Popen(["sleep", "300"])  # not watched: must survive
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    tree: list[psutil.Process] = []
    try:
        root = psutil.Process(int(driver.stdout.readline()))
        tree = [root, *root.children(recursive=True)]
        assert len(tree) == 3 and all(alive(p) for p in tree)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
        deadline = time.time() + 10
        while any(alive(p) for p in tree) and time.time() < deadline:
            time.sleep(0.1)
        assert not [p.pid for p in tree if alive(p)], "the watched tree outlived its driver"
        assert bystander.poll() is None, "the watchdog killed a process it does not watch"
    finally:
        for process in tree:  # on failure only; psutil refuses a PID that was reused
            with contextlib.suppress(psutil.Error):
                process.kill()
        for started in (bystander, driver):
            started.kill()
            started.wait()
