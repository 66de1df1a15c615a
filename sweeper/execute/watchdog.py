"""A watchdog that stops a local Ray cluster's processes once the driver that started it
is gone, so that a killed driver leaves nothing of its cluster behind.

Ray covers most of it: the processes ``ray.init`` starts (GCS, raylet, dashboard, monitors)
carry the kernel's parent-death signal, and workers leave when their raylet goes. The
raylet's own children, the dashboard agent and the runtime-env agent, notice too, but then
wait on the dead GCS for about a minute before they exit (Ray 2.60: still there 40 s after
a driver's SIGKILL, gone by 80 s), holding their ports and memory. Ray offers no switch for
that short of shortening the GCS reconnect timeout for the whole cluster, so this small
process does it.

The driver starts it with the PIDs of the processes ``ray.init`` started and holds the write
end of its stdin. Until that pipe closes, the watchdog remembers every process of those
trees (each by PID and start time, so a reused PID is never mistaken for one of them).
The pipe closes when the driver ends its cluster (``disconnect``) or dies, however it dies
(the kernel closes a dead process's files); the watchdog then kills what it remembered
that still runs, and exits. It never looks beyond those trees: other Ray clusters on the
machine are not its business.

This file runs as a script (``python watchdog.py PID...``), not as ``-m``, so that it
starts in a fraction of a second with psutil alone, without importing Ray.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
from pathlib import Path

import psutil

POLL_SECONDS = 0.5  # how often the trees are re-read while the driver lives


def start_watchdog(roots: list[int]) -> subprocess.Popen[bytes]:
    """Start the watchdog over the process trees of ``roots``. Keep the returned process;
    ``stop_watchdog`` (or the caller's death) makes it clean up and exit."""
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), *map(str, roots)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Its own session: Ctrl-C at the terminal, or a kill of the driver's process group,
        # leaves it running to clean up after them.
        start_new_session=True,
    )


def stop_watchdog(watchdog: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Close the watchdog's pipe (as the driver's death would) and wait for it to finish."""
    if watchdog.stdin is not None:
        watchdog.stdin.close()
    try:
        watchdog.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        watchdog.kill()
        watchdog.wait()


def _remember(roots: list[int], seen: dict[int, float]) -> None:
    for root in roots:
        try:
            process = psutil.Process(root)
            tree = [process, *process.children(recursive=True)]
        except psutil.Error:
            continue  # ended (ray.shutdown, or its parent's death)
        for member in tree:
            try:
                seen.setdefault(member.pid, member.create_time())
            except psutil.Error:
                continue


def _kill_remembered(seen: dict[int, float]) -> None:
    for pid, created in seen.items():
        try:
            process = psutil.Process(pid)
            if process.create_time() == created:
                process.kill()
        except psutil.Error:
            continue  # already gone


def watch(roots: list[int], pipe: int = 0) -> None:
    """Remember the trees of ``roots`` until ``pipe`` reaches its end, then kill them."""
    seen: dict[int, float] = {}
    while True:
        _remember(roots, seen)
        readable, _, _ = select.select([pipe], [], [], POLL_SECONDS)
        if readable and not os.read(pipe, 4096):
            break
    _kill_remembered(seen)


if __name__ == "__main__":
    watch([int(pid) for pid in sys.argv[1:]])
