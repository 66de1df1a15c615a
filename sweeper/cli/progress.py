"""What `sweeper submit` shows while a sweep runs: a live progress view on a terminal, plain
lines elsewhere (logs, CI, a Ray Job's output), fed by the driver's callbacks.

On a terminal (rich): one bar for the sweep (done of to-run, counts by state, elapsed, ETA)
and one bar per running trial (its step, smoothed train loss, latest validation loss). Each
finished trial also prints its line above the bars, so the scrollback keeps the record.
Elsewhere: only the per-trial lines, each ending with the sweep's counts and ETA.
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter
from typing import Any

import click

from sweeper.outcome import TrialOutcome
from sweeper.plan import TrialSpec


def eta_seconds(elapsed: float, total: int, done: int, running_fractions: list[float]) -> float | None:
    """Seconds left, from the measured pace of this run: trials finished plus the finished
    share of the running ones, over the time since the first one started. None before any
    trial has made progress. Assumes the remaining trials cost what the finished ones did on
    average, which holds in expectation because the grid is sampled in random order."""
    progressed = done + sum(min(1.0, max(0.0, f)) for f in running_fractions)
    if progressed <= 0 or elapsed <= 0:
        return None
    return max(0.0, elapsed * (total - progressed) / progressed)


def clock(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def trial_line(done: int, total: int, spec: TrialSpec, outcome: TrialOutcome) -> str:
    loss = f"loss {outcome.final_val_loss:.4f}" if math.isfinite(outcome.final_val_loss) else ""
    extra = f"at step {outcome.diverged_step}" if outcome.status == "diverged" else ""
    if outcome.status == "failed":
        extra = (outcome.error or "")[:120]
    width = len(str(total))
    return (
        f"[{done:>{width}}/{total}] {outcome.status:<8} {spec.label:<44} {loss or extra:<14} "
        f"{outcome.wall_seconds:5.1f}s {outcome.tokens_per_second / 1e3:6.1f}k tok/s"
    ).rstrip()


def _fraction(entry: dict) -> float:
    steps = entry.get("steps") or 0
    return entry.get("step", 0) / steps if steps else 0.0


class SweepProgress:
    """The driver's callbacks (on_start, on_trial, on_tick) rendered for a person."""

    def __init__(self, interactive: bool | None = None):
        self.interactive = sys.stdout.isatty() if interactive is None else interactive
        self.total = 0
        self.done = 0
        self.counts: Counter = Counter()
        self.running: list[dict] = []
        self.first_start: float | None = None
        self._progress: Any = None  # rich.progress.Progress while a terminal view is live
        self._sweep_task: Any = None
        self._trial_tasks: dict[str, Any] = {}
        self._status: Any = None  # a spinner while the sweep is planned and Ray starts

    def begin(self, words: str) -> None:
        """Before the driver starts: a spinner on a terminal (starting Ray takes seconds)."""
        if self.interactive:
            from rich.console import Console

            self._status = Console().status(words)
            self._status.start()

    def begun(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    # ---- the driver's callbacks ----------------------------------------------------------

    def on_start(self, planned: int, pending: int, dashboard_url: str | None) -> None:
        self.total = pending
        if dashboard_url:
            click.echo(f"Ray dashboard: {dashboard_url}")
        if pending and self.interactive:
            self._open()

    def on_trial(self, spec: TrialSpec, outcome: TrialOutcome, counts: Counter) -> None:
        self.done += 1
        self.counts = Counter(counts)
        self.running = [entry for entry in self.running if entry["trial_id"] != spec.trial_id]
        line = trial_line(self.done, self.total, spec, outcome)
        if self._progress is not None:
            self._progress.console.print(line, highlight=False, markup=False)
            self._render()
        else:
            click.echo(f"{line}  | {self.state_words()}")

    def on_tick(self, running: list[dict], counts: Counter) -> None:
        if self.first_start is None and running:
            self.first_start = time.monotonic()
        self.running, self.counts = running, Counter(counts)
        if self._progress is not None:
            self._render()

    def close(self) -> None:
        self.begun()
        if self._progress is not None:
            self._render()
            self._progress.stop()
            self._progress = None

    # ---- what is shown -------------------------------------------------------------------

    def elapsed(self) -> float:
        return time.monotonic() - self.first_start if self.first_start is not None else 0.0

    def eta(self) -> float | None:
        return eta_seconds(self.elapsed(), self.total, self.done, [_fraction(e) for e in self.running])

    def state_words(self) -> str:
        pending = max(0, self.total - self.done - len(self.running))
        failed = self.counts.get("failed", 0)
        words = f"{self.done} done, {len(self.running)} running, {pending} pending"
        if failed:
            words += f", {failed} failed"
        return f"{words}; elapsed {clock(self.elapsed())}, ETA {clock(self.eta())}"

    def _open(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TextColumn("{task.fields[words]}", markup=False),
            transient=False,
        )
        self._sweep_task = self._progress.add_task("sweep", total=self.total, words=self.state_words())
        self._progress.start()

    def _render(self) -> None:
        progress = self._progress
        progress.update(self._sweep_task, completed=self.done, words=self.state_words())
        live = {entry["trial_id"]: entry for entry in self.running}
        for trial_id in list(self._trial_tasks):
            if trial_id not in live:
                progress.remove_task(self._trial_tasks.pop(trial_id))
        for trial_id, entry in live.items():
            words = self._trial_words(entry)
            if trial_id not in self._trial_tasks:
                self._trial_tasks[trial_id] = progress.add_task(
                    f"  {entry.get('label', trial_id)[:40]}", total=entry.get("steps") or None, words=words
                )
            progress.update(
                self._trial_tasks[trial_id],
                completed=entry.get("step", 0),
                total=entry.get("steps") or None,
                words=words,
            )

    @staticmethod
    def _trial_words(entry: dict) -> str:
        if "step" not in entry:
            return entry.get("state", "starting")
        words = f"loss {entry['train_loss']:.3f}" if math.isfinite(entry.get("train_loss", math.nan)) else ""
        if entry.get("val_loss") is not None:
            words += f", val {entry['val_loss']:.3f}"
        return f"{words}  {clock(entry.get('elapsed_s'))}".strip()


__all__ = ["SweepProgress", "clock", "eta_seconds", "trial_line"]
