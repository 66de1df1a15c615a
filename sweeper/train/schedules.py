"""Learning-rate schedules as pure functions of the step.

Steps are 1-based: ``lr_at(s, ...)`` is the learning rate used by the s-th optimizer step.
Warmup is linear over ``warmup_steps`` steps (or ``round(warmup_fraction * total_steps)``)
and reaches the peak on its last step (so step 1 already trains, at peak / warmup_steps). Decaying schedules reach
exactly ``min_lr_ratio * peak`` on the last step.

- cosine: warmup, then half a cosine from the peak down to the floor.
- constant: warmup, then the peak until the end (min_lr_ratio is ignored).
- wsd: warmup, stable at the peak, then linear decay to the floor over the last
  ``round(decay_fraction * total_steps)`` steps (at least one).
- power: the Power scheduler (Shen et al. 2024, "Power Scheduler: A Batch Size and Token
  Number Agnostic Learning Rate Scheduler"): lr(n) = min(peak, B * a * n^b), n the tokens seen
  after the step and B the batch in tokens; the warmup rises linearly to the value at its end,
  and the last ``decay_fraction`` of the steps decay linearly, as wsd's, from the value at the
  decay start to ``min_lr_ratio`` times it. Before its decay a power run does not depend on its
  length, so runs of several budgets share that stem (as wsd's do).
"""

from __future__ import annotations

import math

from sweeper.trainspec import ScheduleSettings, warmup_steps_of


def warmup_steps(total_steps: int, schedule: ScheduleSettings) -> int:
    """Warmup length of a ``total_steps`` run: the schedule's fixed count (capped at the run),
    else its fraction of the run (``trainspec.warmup_steps_of``)."""
    return warmup_steps_of(schedule, total_steps)


def decay_steps(total_steps: int, schedule: ScheduleSettings) -> int:
    """Length of the wsd decay phase (at least 1, never overlapping the warmup)."""
    wanted = max(1, int(round(schedule.decay_fraction * total_steps)))
    return min(wanted, max(1, total_steps - warmup_steps(total_steps, schedule)))


def power_lr(tokens_seen: float, peak: float, schedule: ScheduleSettings, batch_tokens: int) -> float:
    """The Power scheduler's min(peak, B * a * n^b)."""
    assert schedule.a is not None and schedule.b is not None
    return min(peak, batch_tokens * schedule.a * tokens_seen**schedule.b)


def lr_at(
    step: int, total_steps: int, peak: float, schedule: ScheduleSettings, batch_tokens: int | None = None
) -> float:
    """Learning rate of the 1-based ``step`` of a ``total_steps`` run peaking at ``peak``.
    ``batch_tokens`` (tokens per step) is needed by the power schedule only.

    Steps outside 1..total_steps are clamped into it.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    step = min(max(step, 1), total_steps)
    warmup = warmup_steps(total_steps, schedule)
    if schedule.kind == "power":
        if batch_tokens is None:
            raise ValueError("the power schedule needs the batch size in tokens")
        decay = decay_steps(total_steps, schedule)
        decay_start = total_steps - decay
        if step <= warmup:
            return power_lr(warmup * batch_tokens, peak, schedule, batch_tokens) * step / warmup
        if step <= decay_start:
            return power_lr(step * batch_tokens, peak, schedule, batch_tokens)
        start = power_lr(max(decay_start, 1) * batch_tokens, peak, schedule, batch_tokens)
        return start + (schedule.min_lr_ratio * start - start) * (step - decay_start) / decay
    if step <= warmup:
        return peak * step / warmup
    floor = schedule.min_lr_ratio * peak
    if schedule.kind == "constant":
        return peak
    if schedule.kind == "cosine":
        progress = (step - warmup) / (total_steps - warmup)
        return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule.kind == "wsd":
        decay = decay_steps(total_steps, schedule)
        decay_start = total_steps - decay
        if step <= decay_start:
            return peak
        return peak + (floor - peak) * (step - decay_start) / decay
    raise ValueError(f"unknown schedule kind {schedule.kind!r}")


def lr_table(
    total_steps: int, peak: float, schedule: ScheduleSettings, batch_tokens: int | None = None
) -> list[float]:
    """``[lr_at(1), ..., lr_at(total_steps)]``, computed once so the hot loop only indexes."""
    return [lr_at(step, total_steps, peak, schedule, batch_tokens) for step in range(1, total_steps + 1)]


__all__ = ["decay_steps", "lr_at", "lr_table", "power_lr", "warmup_steps"]
