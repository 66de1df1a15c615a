"""Per-trial bookkeeping shared by the single and the fused trainer: the curve, the smoothed
train loss, divergence, and turning all of it into a ``TrialOutcome``.

Divergence rule (one place, so fused members end exactly as they would alone): a step whose
train loss is NaN/inf, or after which the EMA of the train loss exceeds
``divergence_factor * initial_loss`` (initial = the loss of step 1), ends the trial as
``diverged`` at that step. The loss is observed before the step's update, so a diverged
trial took ``diverged_step - 1`` optimizer steps; its curve still holds the diverged step.
"""

from __future__ import annotations

import math
import time
import traceback

from sweeper.outcome import CurvePoint, TrialOutcome, TrialStatus
from sweeper.trainspec import TrainSpec

EMA_ALPHA = 0.1  # weight of the newest loss in the smoothed train loss


def error_text(error: BaseException) -> str:
    """``"ExceptionType: message"``, the form a failed trial row carries."""
    message = str(error).strip() or traceback.format_exception_only(type(error), error)[-1].strip()
    return f"{type(error).__name__}: {message}"


class TrialMonitor:
    """Collects one trial's curve and decides when it has diverged."""

    def __init__(self, spec: TrainSpec):
        self.spec = spec
        self.curve: list[CurvePoint] = []
        self.initial_loss = math.nan
        self.smoothed = math.nan
        self.diverged_step: int | None = None
        self.steps_done = 0
        self.started_at = time.time()
        self._limit = math.inf
        self._batch_tokens = spec.batch_size_tokens

    def observe(self, step: int, lr: float, loss: float) -> bool:
        """Record the train loss of ``step`` (before its update); True when it diverged."""
        self.curve.append(CurvePoint(step, step * self._batch_tokens, lr, loss))
        if not math.isfinite(loss):
            self.diverged_step = step
            return True
        if len(self.curve) == 1:
            self.initial_loss = self.smoothed = loss
            self._limit = self.spec.evaluation.divergence_factor * loss
        else:
            self.smoothed += EMA_ALPHA * (loss - self.smoothed)
        if self.smoothed > self._limit:
            self.diverged_step = step
            return True
        return False

    def stepped(self, step: int) -> None:
        """The update of ``step`` was applied."""
        self.steps_done = step

    def record_val(self, step: int, val_loss: float) -> None:
        self.curve[step - 1].val_loss = val_loss

    def outcome(self, wall_seconds: float, *, final_val_loss: float = math.nan, error: str | None = None) -> TrialOutcome:
        """The trial's outcome: failed when ``error`` is given, diverged when a loss blew up
        (including a non-finite final validation loss), else complete."""
        status = TrialStatus.COMPLETE
        if error is not None:
            status = TrialStatus.FAILED
        elif self.diverged_step is not None:
            status = TrialStatus.DIVERGED
        elif not math.isfinite(final_val_loss):
            status, self.diverged_step = TrialStatus.DIVERGED, self.steps_done
        return TrialOutcome(
            trial_id=self.spec.trial_id,
            status=status.value,
            final_val_loss=final_val_loss if status == TrialStatus.COMPLETE else math.nan,
            smoothed_train_loss=self.smoothed,
            steps_done=self.steps_done,
            tokens_done=self.steps_done * self._batch_tokens,
            wall_seconds=wall_seconds,
            started_at=self.started_at,
            ended_at=time.time(),
            initial_loss=self.initial_loss,
            diverged_step=self.diverged_step if status == TrialStatus.DIVERGED else None,
            error=error,
            curve=self.curve,
        )


__all__ = ["EMA_ALPHA", "TrialMonitor", "error_text"]
