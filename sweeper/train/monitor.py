"""Per-trial bookkeeping shared by the single and the fused trainer: the curve, the smoothed
train loss, divergence, and turning all of it into a ``TrialOutcome``.

Divergence rule (one place, so fused members end exactly as they would alone): a step whose
train loss is NaN/inf, or after which the EMA of the train loss exceeds
``divergence_factor * initial_loss`` (initial = the loss of step 1; the EMA's weight is set
per token, see ``ema_alpha``), ends the trial as
``diverged`` at that step. The loss is observed before the step's update, so a diverged
trial took ``diverged_step - 1`` optimizer steps; its curve still holds the diverged step.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable
from dataclasses import replace

from sweeper.outcome import CurvePoint, TrialOutcome, TrialStatus
from sweeper.trainspec import TrainSpec

SMOOTHING_TOKENS = 10_240  # the smoothed train loss averages over about this many tokens...
SMOOTHING_SHARE = 0.1  # ...or this share of the cell's budget D, when that is fewer
# How often a running trial tells the driver its step and loss (``ProgressReport``): often
# enough for a live view, rare enough to cost nothing next to a training step.
REPORT_EVERY_SECONDS = 2.0

#: ``report(trial_id, point)``: hears a running trial's progress; ``point`` holds ``step``,
#: ``steps``, ``train_loss`` (smoothed), ``val_loss`` (latest measured, or None) and
#: ``elapsed_s``. It must not raise and must return at once (the trainer waits for it).
ProgressReport = Callable[[str, dict], None]


def ema_alpha(batch_tokens: int, tokens_budget: int) -> float:
    """Weight of the newest step's loss in the smoothed train loss.

    The EMA forgets per *token*, over a horizon H = min(SMOOTHING_TOKENS, SMOOTHING_SHARE * D)
    tokens: alpha = 1 - exp(-batch_tokens / H). H depends only on the cell's D, so every batch
    size of a cell averages its losses over the same tokens; a per-step weight would average
    a small batch's (noisier) losses over fewer tokens than a large batch's, and the divergence
    rule would fire more readily at small batches. (At 1,024 tokens per step and a large D this
    is the former 0.1 per step.)
    """
    horizon = max(1.0, min(SMOOTHING_TOKENS, SMOOTHING_SHARE * tokens_budget))
    return 1.0 - math.exp(-batch_tokens / horizon)


def error_text(error: BaseException) -> str:
    """``"ExceptionType: message"``, the form a failed trial row carries."""
    message = str(error).strip() or traceback.format_exception_only(type(error), error)[-1].strip()
    return f"{type(error).__name__}: {message}"


class TrialMonitor:
    """Collects one trial's curve and decides when it has diverged."""

    def __init__(self, spec: TrainSpec, report: ProgressReport | None = None):
        self.spec = spec
        self.report = report
        self.last_val_loss: float | None = None
        self.curve: list[CurvePoint] = []
        self.initial_loss = math.nan
        self.smoothed = math.nan
        self.diverged_step: int | None = None
        self.steps_done = 0
        self.started_at = time.time()
        self._limit = math.inf
        self._batch_tokens = spec.batch_size_tokens
        self._alpha = ema_alpha(spec.batch_size_tokens, spec.tokens_budget)
        self._next_report = time.monotonic()  # the first step reports, then every REPORT_EVERY_SECONDS

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
            self.smoothed += self._alpha * (loss - self.smoothed)
        if self.smoothed > self._limit:
            self.diverged_step = step
            return True
        return False

    def stepped(self, step: int) -> None:
        """The update of ``step`` was applied."""
        self.steps_done = step
        if self.report is not None and time.monotonic() >= self._next_report:
            self._next_report = time.monotonic() + REPORT_EVERY_SECONDS
            self.report(
                self.spec.trial_id,
                {
                    "step": step,
                    "steps": self.spec.steps,
                    "train_loss": self.smoothed,
                    "val_loss": self.last_val_loss,
                    "elapsed_s": time.time() - self.started_at,
                },
            )

    def adopt(self, parent: TrialMonitor) -> None:
        """Take over ``parent``'s history so far: this trial's run was ``parent``'s up to now
        (a WSD branch at its decay start, see branching.py)."""
        self.curve = [replace(point) for point in parent.curve]
        self.initial_loss, self.smoothed = parent.initial_loss, parent.smoothed
        self.diverged_step, self.steps_done = parent.diverged_step, parent.steps_done
        self._limit = parent._limit

    def record_val(self, step: int, val_loss: float) -> None:
        self.curve[step - 1].val_loss = val_loss
        self.last_val_loss = val_loss

    def outcome(
        self, wall_seconds: float, *, final_val_loss: float = math.nan, error: str | None = None
    ) -> TrialOutcome:
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


__all__ = ["SMOOTHING_SHARE", "SMOOTHING_TOKENS", "ProgressReport", "TrialMonitor", "ema_alpha", "error_text"]
