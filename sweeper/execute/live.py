"""Live progress of running trials: a small Ray actor that trials write to and the driver reads.

Trials on any node report their step, smoothed train loss, latest validation loss and
elapsed time every few seconds (train/monitor.py decides when) with a fire-and-forget actor
call; the driver reads the latest point of each running trial once per scheduling round,
without waiting: each read takes the answer to the previous one and sends the next.
Through Ray, never a shared filesystem: the nodes of a cluster need not share a disk.

Contract: observability never fails or slows a sweep. A report that cannot be delivered is
dropped, and a board that has not answered yet (or is lost) reads as its last answer.
"""

from __future__ import annotations

from collections.abc import Callable

import ray


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
    """The driver's side of the board: created lazily, read without waiting, never raising.

    num_cpus=0: the board takes no trial's slot. It lives as long as the driver that made it.
    """

    def __init__(self) -> None:
        self._board = None
        self._asked: ray.ObjectRef | None = None  # the read sent and not yet answered
        self._latest: dict[str, dict] = {}

    def handle(self):  # noqa: ANN201 (a Ray actor handle, passed to trial tasks)
        if self._board is None:
            try:
                self._board = _Board.remote()  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 (no board: trials run without reporting)
                return None
        return self._board

    def read(self, trial_ids: list[str]) -> dict[str, dict]:
        """The latest points the board has sent of ``trial_ids`` (a round late: the answer to
        the previous call's read). Never waits: a blocking actor call here held the driver
        loop up to a second per round (the board's process starts with the first trial),
        and the driver's rounds are what keeps the cluster fed."""
        if self._board is None or not trial_ids:
            return {}
        try:
            if self._asked is not None and ray.wait([self._asked], timeout=0)[0]:
                asked, self._asked = self._asked, None
                self._latest = ray.get(asked)
            if self._asked is None:
                self._asked = self._board.read.remote(trial_ids)
        except Exception:  # noqa: BLE001 (a slow or lost board only blanks the live view)
            self._asked = None
        wanted = set(trial_ids)
        return {trial_id: point for trial_id, point in self._latest.items() if trial_id in wanted}

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
