"""The sweep driver: plan -> schedule -> execute -> record, in one loop.

This is the one place where the stages meet. It owns the run folder while it runs (an
exclusive lock the kernel releases when the process dies, so a killed driver never blocks
the next one), keeps as many trials in flight as the cluster has room for, records each
finished trial before telling Optuna (so the Parquet record is never behind the study), and
writes ``progress.json`` for ``sweeper status``.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from sweeper.outcome import STATUSES, TrialOutcome
from sweeper.plan import TrialSpec, plan_trials
from sweeper.recipe import Recipe
from sweeper.results import ResultSink, read_trials

LOCK_FILE = ".driver.lock"
PROGRESS_FILE = "progress.json"
RECIPE_FILE = "recipe.yaml"


class SweepError(RuntimeError):
    """A sweep that cannot start; the message is one line for the user."""


@dataclass
class SweepSummary:
    run_dir: Path
    planned: int
    already_recorded: int
    counts: Counter = field(default_factory=Counter)
    wall_seconds: float = 0.0
    dashboard_url: str | None = None
    max_failed_fraction: float = 0.0

    @property
    def failed_fraction(self) -> float:
        ran = sum(self.counts.values())
        return self.counts["failed"] / ran if ran else 0.0

    @property
    def ok(self) -> bool:
        """True when failures stay within the recipe's tolerated share (0 by default)."""
        return self.failed_fraction <= self.max_failed_fraction + 1e-12


ProgressCallback = Callable[[TrialSpec, TrialOutcome, Counter], None]


def write_json_atomic(path: Path, payload: dict) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(temporary, path)


class RunFolderLock:
    """Exclusive ownership of a run folder by one driver.

    flock, not a pid file: the kernel drops the lock the moment the holder dies, however it
    dies, so a leftover file never blocks a restart.
    """

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK_FILE
        self._handle = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise SweepError(
                f"{self.path.parent}: run folder is in use by another sweeper driver ({holder}); "
                "wait for it to finish or stop it first"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def recorded_results(run_dir: Path) -> tuple[dict[str, tuple[str, float]], list[str]]:
    """Trial id -> (status, loss) of the trials a run folder already holds as finished.

    Failed trials are not counted as finished: a failure may be transient, so a resumed
    sweep runs them again.
    """
    read = read_trials(run_dir)
    table = read.table
    finished = {}
    for trial_id, status, loss in zip(
        table.column("trial_id").to_pylist(),
        table.column("status").to_pylist(),
        table.column("loss").to_pylist(),
    ):
        if status in ("complete", "diverged"):
            finished[trial_id] = (status, float("nan") if loss is None else loss)
    return finished, read.problems


def save_recipe(recipe: Recipe, run_dir: Path) -> None:
    path = run_dir / RECIPE_FILE
    temporary = path.with_name(f".{RECIPE_FILE}.tmp")
    temporary.write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    os.replace(temporary, path)


def run_sweep(
    recipe: Recipe,
    run_dir: Path,
    *,
    address: str | None = None,
    storage_url: str | None = None,
    num_cpus: int | None = None,
    on_start: Callable[[int, int, str | None], None] | None = None,
    on_trial: ProgressCallback | None = None,
) -> SweepSummary:
    """Run every planned trial of ``recipe`` not yet recorded in ``run_dir``; return counts."""
    # Imported here so that ``sweeper status``/``fit`` never pay for Ray, Optuna or torch.
    from sweeper.execute import TrialExecutor, connect, disconnect
    from sweeper.schedule import SweepStudy
    from sweeper.train import data_identity

    run_dir = Path(run_dir)
    lock = RunFolderLock(run_dir)
    lock.acquire()
    started = time.time()
    cluster = None
    try:
        save_recipe(recipe, run_dir)
        specs = plan_trials(recipe, data_identity(recipe.data))
        recorded, _problems = recorded_results(run_dir)
        pending = {spec.trial_id for spec in specs if spec.trial_id not in recorded}
        summary = SweepSummary(
            run_dir,
            planned=len(specs),
            already_recorded=len(specs) - len(pending),
            max_failed_fraction=recipe.max_failed_fraction,
        )
        if pending:  # nothing to run: no cluster to start
            cluster = connect(address, num_cpus=num_cpus)
            summary.dashboard_url = cluster.dashboard_url
        if on_start is not None:
            on_start(len(specs), len(pending), summary.dashboard_url)
        if pending:
            study = SweepStudy.open(recipe.name, specs, run_dir, storage_url)
            study.reconcile(recorded)
            _drive(study, TrialExecutor(recipe.resources), ResultSink(run_dir), pending, summary, on_trial)
        summary.wall_seconds = time.time() - started
        _write_progress(run_dir, summary, running=[], finished=True)
        return summary
    finally:
        if cluster is not None and cluster.started_here:
            disconnect()
        lock.release()


def _drive(study, executor, sink: ResultSink, pending: set[str], summary: SweepSummary,
           on_trial: ProgressCallback | None) -> None:
    asked_by_id = {}
    while pending:
        runnable = pending - executor.running_ids()
        while runnable and len(executor.in_flight) < executor.capacity():
            asked = study.next_trial(runnable)
            if asked is None:
                break
            executor.submit(asked.spec)
            asked_by_id[asked.spec.trial_id] = asked
            runnable.discard(asked.spec.trial_id)
        _write_progress(sink.run_dir, summary, running=list(executor.in_flight.values()), finished=False)
        for spec, outcome in executor.wait(timeout=5.0):
            # Record first, then tell: the Parquet record is never behind the study.
            sink.record(spec, outcome)
            study.tell(asked_by_id.pop(spec.trial_id), outcome)
            pending.discard(spec.trial_id)
            summary.counts[outcome.status] += 1
            if on_trial is not None:
                on_trial(spec, outcome, summary.counts)


def _write_progress(run_dir: Path, summary: SweepSummary, running: list[TrialSpec], finished: bool) -> None:
    write_json_atomic(
        run_dir / PROGRESS_FILE,
        {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "updated_at": time.time(),
            "finished": finished,
            "planned": summary.planned,
            "already_recorded": summary.already_recorded,
            "counts": {status: summary.counts.get(status, 0) for status in STATUSES},
            "dashboard_url": summary.dashboard_url,
            "running": [{"trial_id": s.trial_id, "label": s.label} for s in running],
        },
    )
