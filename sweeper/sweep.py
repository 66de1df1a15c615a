"""The sweep driver: plan -> schedule -> execute -> record, in one loop.

This is the one place where the stages meet. ``run_trials`` owns a run folder while it runs
(runfolder.RunFolderLock: a killed driver never blocks the next one), starts or attaches to
the cluster, keeps as many trials in flight as the cluster has room for, records each
finished trial before telling the schedule (so the Parquet record is never behind the
study), and writes ``progress.json`` for ``sweeper status``. A sweep (``run_sweep``) gives it
the planned grid and an Optuna study; a target run (target.py) gives it a few fixed points.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sweeper.errors import SweeperError
from sweeper.outcome import FINISHED_STATUSES, STATUSES, TrialOutcome, TrialStatus
from sweeper.plan import TrialSpec, estimate_trial_memory_bytes, fused_group_size, plan_trials
from sweeper.recipe import Recipe
from sweeper.results import ResultSink, read_trials
from sweeper.runfolder import RunFolderLock, save_recipe, write_progress
from sweeper.trainspec import fusion_key

# Rows a driver does not run again: a sweep's finished trials and a target's finished points.
RECORDED_STATUSES = FINISHED_STATUSES | {TrialStatus.TARGET.value}


@dataclass
class SweepSummary:
    run_dir: Path
    planned: int
    already_recorded: int
    counts: Counter = field(default_factory=Counter)  # statuses of the trials this run ran
    sweep_counts: Counter = field(default_factory=Counter)  # statuses of every planned trial now
    wall_seconds: float = 0.0
    dashboard_url: str | None = None
    max_failed_fraction: float = 0.0

    @property
    def failed_fraction(self) -> float:
        """Failed share of the whole sweep (earlier runs' trials included)."""
        total = sum(self.sweep_counts.values())
        return self.sweep_counts[TrialStatus.FAILED] / total if total else 0.0

    @property
    def ok(self) -> bool:
        """True when failures stay within the recipe's tolerated share (0 by default)."""
        return self.failed_fraction <= self.max_failed_fraction + 1e-12


ProgressCallback = Callable[[TrialSpec, TrialOutcome, Counter], None]
StartCallback = Callable[[int, int, "str | None"], None]


class Asked(Protocol):
    """A trial handed out by a schedule, to be told back when it ends."""

    spec: TrialSpec


class Schedule(Protocol):
    """What the driver loop asks for work: Optuna's study (schedule/study.py) for a sweep,
    ``FixedOrder`` for a target run. ``has_proposal``: whether it can hand out work now (a
    law-guided search may wait for results); ``finished``: whether it is done before every
    pending trial has run (a law-guided search runs only what it chooses)."""

    def next_group(self, runnable: set[str], max_members: Callable[[TrialSpec], int],
                   key: Callable[[TrialSpec], tuple]) -> list[Any]: ...

    def tell(self, asked: Any, outcome: TrialOutcome) -> None: ...

    def has_proposal(self) -> bool: ...

    def finished(self) -> bool: ...


@dataclass
class Queued:
    spec: TrialSpec


class FixedOrder:
    """A schedule that hands out a fixed list of trials in order, one per task."""

    def __init__(self, specs: Iterable[TrialSpec]):
        self.specs = list(specs)

    def next_group(self, runnable: set[str], max_members: Callable[[TrialSpec], int],
                   key: Callable[[TrialSpec], tuple]) -> list[Queued]:
        return [Queued(spec) for spec in self.specs if spec.trial_id in runnable][:1]

    def tell(self, asked: Queued, outcome: TrialOutcome) -> None:
        return None

    def has_proposal(self) -> bool:
        return True

    def finished(self) -> bool:
        return False


def recorded_results(run_dir: Path) -> tuple[dict[str, tuple[str, float]], dict[str, int], list[str]]:
    """What a run folder already holds: trial id -> (status, loss) of its finished trials,
    trial id -> attempts so far of its failed ones, and the reader's problems.

    Failed trials are not counted as finished: a failure may be transient, so a resumed
    sweep runs them again (as attempt n + 1).
    """
    read = read_trials(run_dir)
    table = read.table
    finished, failed_attempts = {}, {}
    for trial_id, status, loss, attempt in zip(
        table.column("trial_id").to_pylist(),
        table.column("status").to_pylist(),
        table.column("loss").to_pylist(),
        table.column("attempt").to_pylist(),
    ):
        if status in RECORDED_STATUSES:
            finished[trial_id] = (status, float("nan") if loss is None else loss)
        elif status == TrialStatus.FAILED:
            failed_attempts[trial_id] = attempt or 1
    return finished, failed_attempts, read.problems


def check_memory(specs: list[TrialSpec], recipe: Recipe) -> None:
    """Refuse a sweep whose largest trial cannot fit the memory it may use: the recipe's
    ``resources.memory_gb`` when given, else this machine's physical memory."""
    if not specs:
        return
    largest = max(specs, key=estimate_trial_memory_bytes)
    need = estimate_trial_memory_bytes(largest)
    if recipe.resources.memory_gb is not None:
        limit, what = recipe.resources.memory_gb * 2**30, f"resources.memory_gb = {recipe.resources.memory_gb:g}"
    else:
        limit, what = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine's memory"
    if need > limit:
        raise SweeperError(
            f"trial {largest.label} needs about {need / 2**30:.1f} GiB (estimated: weights, AdamW "
            f"state and activations of batch {largest.batch_size} x {largest.shape.seq_len}) but "
            f"{what} is {limit / 2**30:.1f} GiB; use smaller shapes or batches, or more memory"
        )


def run_sweep(
    recipe: Recipe,
    run_dir: Path,
    *,
    address: str | None = None,
    storage_url: str | None = None,
    num_cpus: int | None = None,
    on_start: StartCallback | None = None,
    on_trial: ProgressCallback | None = None,
    on_problem: Callable[[str], None] | None = None,
) -> SweepSummary:
    """Run every planned trial of ``recipe`` not yet recorded in ``run_dir`` (a law-guided
    search: those its sampler chooses); return counts. ``on_problem`` hears each damaged
    result file found at the start (its trial re-runs)."""
    # Imported here so that ``sweeper status``/``fit`` never pay for Ray, Optuna or torch.
    from sweeper.train.data import data_identity

    specs = plan_trials(recipe, data_identity(recipe.data))
    return run_trials(recipe, Path(run_dir), specs, study_opener(recipe, specs, Path(run_dir), storage_url),
                      address=address, num_cpus=num_cpus, save=True, members=fused_group_size(recipe, specs),
                      planned=planned_trials(recipe, len(specs)), on_start=on_start, on_trial=on_trial,
                      on_problem=on_problem)


def study_opener(recipe: Recipe, specs: list[TrialSpec], run_dir: Path, storage_url: str | None = None, *,
                 grid_runs: int | None = None, cell_sizes: dict[str, float] | None = None,
                 seed: int = 0) -> Callable[[dict[str, tuple[str, float]]], Schedule]:
    """The sweep's Optuna study over ``specs`` with the recipe's search (grid or law-guided,
    the latter steered by the fitter's laws). ``grid_runs``: the full grid's runs, the
    adaptive budget's base; ``cell_sizes``: the law's N per cell where it is not the
    shape's (a replayed table's)."""

    def open_study(recorded: dict[str, tuple[str, float]]) -> Schedule:
        from sweeper.fit.guide import predict_optima
        from sweeper.schedule import SweepStudy

        study = SweepStudy.open(recipe.name, specs, run_dir, storage_url, sampler_seed=seed,
                                search=recipe.search, predictor=predict_optima, grid_runs=grid_runs,
                                cell_sizes=cell_sizes)
        study.reconcile(recorded)
        return study

    return open_study


def planned_trials(recipe: Recipe, grid_runs: int) -> int:
    """Trials a sweep plans: the whole grid, or at most a law-guided search's budget."""
    if recipe.search.kind == "adaptive":
        from sweeper.schedule.adaptive import budget_runs

        return min(grid_runs, budget_runs(recipe.search.budget, grid_runs))
    return grid_runs


def run_trials(
    recipe: Recipe,
    run_dir: Path,
    specs: list[TrialSpec],
    open_schedule: Callable[[dict[str, tuple[str, float]]], Schedule],
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    save: bool = False,
    members: Callable[[TrialSpec], int] = lambda spec: 1,
    complete_as: TrialStatus = TrialStatus.COMPLETE,
    planned: int | None = None,
    executor: Any = None,
    on_start: StartCallback | None = None,
    on_trial: ProgressCallback | None = None,
    on_problem: Callable[[str], None] | None = None,
) -> SweepSummary:
    """Run each of ``specs`` not yet recorded in ``run_dir``, in the order ``open_schedule``
    (given the recorded results) decides, ``members(spec)`` trials per task at most.

    ``save`` writes the recipe into the folder (a sweep's, for ``sweeper resume``);
    ``complete_as`` is the status a complete trial is recorded with (``target`` for a target
    run). ``planned``: how many of ``specs`` the schedule means to run (a law-guided search's
    budget; default all). ``executor`` replaces the Ray cluster (a replay answers trials from a
    recorded table; nothing trains). Raises SweeperError before anything runs: exit code 2
    when the trials cannot run here (memory, placement), 3 when another driver holds the folder.
    """
    from sweeper.execute import PlacementError, TrialExecutor, connect, disconnect

    if executor is None:
        check_memory(specs, recipe)  # before the run folder exists: a refused sweep writes nothing
    lock = RunFolderLock(run_dir)
    lock.acquire()
    started = time.time()
    cluster = None
    try:
        if save:
            save_recipe(recipe, run_dir)
        recorded, failed_attempts, problems = recorded_results(run_dir)
        if on_problem is not None:
            for problem in problems:
                on_problem(problem)
        pending = {spec.trial_id for spec in specs if spec.trial_id not in recorded}
        planned = len(specs) if planned is None else planned
        already_recorded = len(specs) - len(pending)
        to_run = min(len(pending), max(0, planned - already_recorded))
        summary = SweepSummary(
            run_dir,
            planned=planned,
            already_recorded=already_recorded,
            max_failed_fraction=recipe.max_failed_fraction,
        )
        if pending and executor is None:  # nothing to run: no cluster to start
            cluster = connect(address, num_cpus=num_cpus)
            summary.dashboard_url = cluster.dashboard_url
            try:
                # Refuses at once trials that no node can ever hold.
                executor = TrialExecutor(recipe.resources, dashboard_url=cluster.dashboard_url)
            except PlacementError as error:
                raise SweeperError(str(error)) from None
        if on_start is not None:
            on_start(planned, to_run, summary.dashboard_url)
        if pending:
            schedule = open_schedule(recorded)
            _drive(schedule, executor, ResultSink(run_dir), pending, summary, on_trial, members,
                   failed_attempts, complete_as, recipe.name)
        summary.wall_seconds = time.time() - started
        planned_ids = {spec.trial_id for spec in specs}
        statuses = read_trials(run_dir).table.select(["trial_id", "status"]).to_pylist()
        summary.sweep_counts = Counter(row["status"] for row in statuses if row["trial_id"] in planned_ids)
        _write_progress(run_dir, summary, running=[], finished=True)
        return summary
    finally:
        if cluster is not None and cluster.started_here:
            disconnect()
        lock.release()


def _drive(schedule: Schedule, executor: Any, sink: ResultSink, pending: set[str], summary: SweepSummary,
           on_trial: ProgressCallback | None, max_members: Callable[[TrialSpec], int],
           failed_attempts: dict[str, int], complete_as: TrialStatus, name: str) -> None:
    from sweeper.execute.metrics import SweepMetrics  # Ray metrics: see execute/metrics.py

    metrics = SweepMetrics(name)
    asked_by_id = {}
    while pending and not schedule.finished():
        runnable = pending - executor.running_ids()
        while runnable and len(executor.in_flight) < executor.capacity() and schedule.has_proposal():
            group = schedule.next_group(runnable, max_members, fusion_key)
            if not group:
                break
            executor.submit([asked.spec for asked in group])
            for asked in group:
                asked_by_id[asked.spec.trial_id] = asked
                runnable.discard(asked.spec.trial_id)
        if not executor.in_flight:
            break  # nothing running and nothing more to ask: the search has ended
        running = executor.in_flight_trials()
        metrics.progress(pending=len(pending) - len(running), running=len(running),
                         counts=summary.counts, recorded=summary.already_recorded)
        _write_progress(sink.run_dir, summary, running=running, finished=False,
                        where=executor.where())
        # Short waits, so that progress.json (and `sweeper status`) follows running trials.
        for spec, outcome in executor.wait(timeout=1.0):
            told = outcome
            if outcome.status == TrialStatus.COMPLETE and complete_as != TrialStatus.COMPLETE:
                outcome = dataclasses.replace(outcome, status=complete_as.value)
            # Record first, then tell: the Parquet record is never behind the study.
            sink.record(spec, outcome, attempt=failed_attempts.get(spec.trial_id, 0) + 1)
            schedule.tell(asked_by_id.pop(spec.trial_id), told)
            pending.discard(spec.trial_id)
            summary.counts[outcome.status] += 1
            metrics.finished(spec.cell_id, outcome.status, outcome.final_val_loss)
            if on_trial is not None:
                on_trial(spec, outcome, summary.counts)
    metrics.progress(pending=0, running=0, counts=summary.counts, recorded=summary.already_recorded)


def _write_progress(run_dir: Path, summary: SweepSummary, running: list[TrialSpec], finished: bool,
                    where: dict[str, dict] | None = None) -> None:
    """``where``: trial id -> {"state", "node_id", "node_ip", ...} from the executor, if known."""
    where = where or {}
    write_progress(
        run_dir,
        {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "updated_at": time.time(),
            "finished": finished,
            "planned": summary.planned,
            "already_recorded": summary.already_recorded,
            "counts": {status: summary.counts.get(status, 0) for status in STATUSES},
            "dashboard_url": summary.dashboard_url,
            "running": [{"trial_id": s.trial_id, "label": s.label, **where.get(s.trial_id, {})} for s in running],
        },
    )
