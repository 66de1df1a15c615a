"""Shared result types: what a trainer hands back for one trial.

These cross the Ray boundary (pickled) from worker to driver, so they hold plain values
only. The trainer fills them; results/ turns them into Parquet rows; nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class TrialStatus(str, Enum):
    """How a trial ended; the value is what the trials table's ``status`` column holds.

    A ``str`` enum, so a status compares equal to its column value and pickles across Ray."""

    COMPLETE = "complete"  # trained to the end; final_val_loss is the headline
    DIVERGED = "diverged"  # loss NaN/inf or far above its start; data, not a failure
    FAILED = "failed"  # an exception or a dead worker; re-run on resume
    PRUNED = "pruned"  # stopped early by a pruner
    TARGET = "target"  # a target-scale run (sweeper target), not part of the sweep's fit

    def __str__(self) -> str:
        return self.value


STATUSES: tuple[str, ...] = tuple(status.value for status in TrialStatus)
# Ended for good: a resumed sweep does not run these again (failures may be transient).
FINISHED_STATUSES: frozenset[str] = frozenset({TrialStatus.COMPLETE.value, TrialStatus.DIVERGED.value})


@dataclass
class CurvePoint:
    """One logged step of a trial. ``val_loss`` is None where it was not measured."""

    step: int  # 1-based optimizer step just taken
    tokens: int  # tokens trained on so far
    lr: float  # learning rate used at this step
    train_loss: float
    val_loss: float | None = None


@dataclass
class TrialOutcome:
    """How one trial ended, as measured by the trainer.

    ``final_val_loss`` is the headline loss (held-out, at the end); NaN unless complete.
    ``diverged_step`` is the step at which divergence was detected, else None.
    """

    trial_id: str
    status: str  # a TrialStatus value
    final_val_loss: float
    smoothed_train_loss: float
    steps_done: int
    tokens_done: int
    wall_seconds: float
    started_at: float  # unix seconds
    ended_at: float
    initial_loss: float = float("nan")
    diverged_step: int | None = None
    error: str | None = None
    node_id: str = ""
    curve: list[CurvePoint] = field(default_factory=list)
    # A replayed trial's own table columns (model size, schedule, ...): an imported table's
    # N (e.g. an MoE's active parameters) is no shape's, so the row keeps the recorded one.
    recorded: dict | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_done / self.wall_seconds if self.wall_seconds > 0 else 0.0
