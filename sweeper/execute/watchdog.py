"""A watchdog that stops a local Ray cluster's processes once the driver that started it
is gone, so that a killed driver leaves nothing of its cluster behind.

Ray covers most of it: the processes ``ray.init`` starts (GCS, raylet, dashboard, monitors)
carry the kernel's parent-death signal, and workers leave when their raylet goes. The
raylet's own children, the dashboard agent and the runtime-env agent, notice too, but then
wait on the dead GCS for about a minute before they exit (Ray 2.60: still there 40 s after
a driver's SIGKILL, gone by 80 s), holding their ports and memory. Ray offers no switch for
that short of shortening the GCS reconnect timeout for the whole cluster, so this small
process does it.

The driver starts it just before ``ray.init`` and holds the write end of its stdin. While
``ray.init`` runs, every new child of the driver is the cluster's (a driver killed during
Ray's start-up is covered too); once it returns, the driver writes the PIDs of what it
started, and from then on only those trees are watched. Until the pipe closes, the
watchdog remembers every process of them (each by PID and start time, so a reused PID is
never mistaken for one of them).
The pipe closes when the driver ends its cluster (``disconnect``) or dies, however it dies
(the kernel closes a dead process's files); the watchdog then kills what it remembered
that still runs, and exits. It never looks beyond those trees: other Ray clusters on the
machine are not its business.

This file runs as a script (``python watchdog.py DRIVER_PID [EXCLUDED_PID...]``), not as
``-m``, so that it starts in a fraction of a second with psutil alone, without importing Ray.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
from pathlib import Path

import psutil

POLL_SECONDS = 0.5  # how often the trees are re-read while the driver lives


def start_watchdog(excluded: set[int]) -> subprocess.Popen[bytes]:
    """Start the watchdog of this process's cluster: until ``declare_roots``, every new child
    of this process but ``excluded`` (the children it had before) is the cluster's. Keep the
    returned process; ``stop_watchdog`` (or this process's death) makes it clean up and exit."""
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), str(os.getpid()), *map(str, sorted(excluded))],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Detached by setsid, outside the driver's process group: Ctrl-C at the terminal, or a kill of that group,
        # leaves it running to clean up after them.
        start_new_session=True,
    )


def declare_roots(watchdog: subprocess.Popen[bytes], roots: list[int]) -> None:
    """From now on, watch only the trees of ``roots`` (what ``ray.init`` started)."""
    assert watchdog.stdin is not None
    watchdog.stdin.write(" ".join(map(str, roots)).encode() + b"\n")
    watchdog.stdin.flush()


def stop_watchdog(watchdog: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Close the watchdog's pipe (as the driver's death would) and wait for it to finish."""
    if watchdog.stdin is not None:
        watchdog.stdin.close()
    try:
        watchdog.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        watchdog.kill()
        watchdog.wait()


def _new_children(driver: int, excluded: set[int]) -> list[int]:
    try:
        children = psutil.Process(driver).children()
    except psutil.Error:
        return []  # the driver is gone: what was remembered is what there is
    return [child.pid for child in children if child.pid not in excluded and child.pid != os.getpid()]


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


def watch(driver: int, excluded: set[int], pipe: int = 0) -> None:
    """Remember the cluster's process trees until ``pipe`` reaches its end, then kill them."""
    seen: dict[int, float] = {}
    roots: list[int] | None = None  # until declared: the driver's new children
    received = b""
    while True:
        _remember(_new_children(driver, excluded) if roots is None else roots, seen)
        readable, _, _ = select.select([pipe], [], [], POLL_SECONDS)
        if not readable:
            continue
        chunk = os.read(pipe, 4096)
        if not chunk:
            break
        received += chunk
        if roots is None and b"\n" in received:
            roots = [int(pid) for pid in received.split(b"\n", 1)[0].split()]
    _kill_remembered(seen)


if __name__ == "__main__":
    watch(int(sys.argv[1]), {int(pid) for pid in sys.argv[2:]})
