"""Live progress of running trials: a small Ray actor that trials write to and the driver reads.

Trials on any node report their step, smoothed train loss, latest validation loss and
elapsed time every few seconds (train/monitor.py decides when) with a fire-and-forget actor
call; the driver reads the latest point of each running trial once per scheduling round.
Through Ray, never a shared filesystem: the nodes of a cluster need not share a disk.

Contract: observability never fails a sweep. A report that cannot be delivered is dropped,
and a board that does not answer in time reads as empty.
"""

from __future__ import annotations

from collections.abc import Callable

import ray

READ_TIMEOUT_SECONDS = 1.0


@ray.remote(num_cpus=0)
class _Board:
    """trial id -> the latest progress point of that trial (a plain dict)."""

    def __init__(self) -> None:
        self.points: dict[str, dict] = {}

    def update(self, trial_id: str, point: dict) -> None:
        self.points[trial_id] = point

    def read(self, trial_ids: list[str]) -> dict[str, dict]:
        return {trial_id: self.points[trial_id] for trial_id in trial_ids if trial_id in self.points}

    def forget(self, trial_ids: list[str]) -> None:
        for trial_id in trial_ids:
            self.points.pop(trial_id, None)


class LiveProgress:
    """The driver's side of the board: created lazily, read with a timeout, never raising.

    num_cpus=0: the board takes no trial's slot. It lives as long as the driver that made it.
    """

    def __init__(self) -> None:
        self._board = None

    def handle(self):  # noqa: ANN201 (a Ray actor handle, passed to trial tasks)
        if self._board is None:
            try:
                self._board = _Board.remote()  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 (no board: trials run without reporting)
                return None
        return self._board

    def read(self, trial_ids: list[str]) -> dict[str, dict]:
        if self._board is None or not trial_ids:
            return {}
        try:
            return ray.get(self._board.read.remote(trial_ids), timeout=READ_TIMEOUT_SECONDS)
        except Exception:  # noqa: BLE001 (a slow or lost board only blanks the live view)
            return {}

    def forget(self, trial_ids: list[str]) -> None:
        if self._board is not None:
            try:
                self._board.forget.remote(trial_ids)
            except Exception:  # noqa: BLE001
                pass


def reporter(board) -> Callable[[str, dict], None] | None:  # noqa: ANN001 (actor handle or None)
    """Inside a trial task: the ``report`` callback the trainer calls (train/monitor.py)."""
    if board is None:
        return None

    def report(trial_id: str, point: dict) -> None:
        try:
            board.update.remote(trial_id, point)
        except Exception:  # noqa: BLE001 (a lost board must not fail the trial)
            pass

    return report


__all__ = ["LiveProgress", "reporter"]
