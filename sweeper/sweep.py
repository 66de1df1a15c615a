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
import errno
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
from sweeper.plan import (
    TrialSpec,
    estimate_group_memory_bytes,
    estimate_trial_memory_bytes,
    fused_group_size,
    plan_trials,
    whole_runs,
)
from sweeper.recipe import Recipe
from sweeper.results import ResultSink, compact_run, damaged_curves, read_trials
from sweeper.runfolder import RunFolderLock, check_writable_folder, save_recipe, write_progress
from sweeper.trainspec import budget_line_key, fusion_key

# Rows a driver does not run again: a sweep's finished trials and a target's finished points.
RECORDED_STATUSES = FINISHED_STATUSES | {TrialStatus.TARGET.value}

# A run folder that stops taking writes (full disk, quota, file-size limit, remounted
# read-only) ends the sweep with one line; what was recorded stays whole (atomic writes,
# the journal's torn tail is cut at the next open), so `sweeper resume` finishes it.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
# Finished trials are written together once this many wait, or the oldest has waited this
# long (a part file per trial is mostly footer; see results/sink.py).
RESULT_BUFFER_TRIALS = 256
RESULT_BUFFER_SECONDS = 2.0
PROGRESS_SECONDS = 0.5  # progress.json (for `sweeper status`) at most this often


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
    training: dict = field(default_factory=dict)  # budgets, tokens and saving (train/branching.py)

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
# Once per scheduling round (about a second): the trials in flight, as progress.json lists
# them (label, state, node, and once a trial has reported: step, steps, train_loss, val_loss,
# elapsed_s), and this run's finished trials by status.
TickCallback = Callable[[list[dict], Counter], None]


class Asked(Protocol):
    """A trial handed out by a schedule, to be told back when it ends."""

    spec: TrialSpec


class Schedule(Protocol):
    """What the driver loop asks for work: the grid's study (schedule/study.py) or a
    law-guided search (schedule/adaptive.py) for a sweep, ``FixedOrder`` for a target run.
    ``has_proposal``: whether it can hand out work now (a law-guided search waits for told
    results); ``finished``: whether it is done before every pending trial has run (a
    law-guided search runs only what it chooses)."""

    def next_group(
        self, runnable: set[str], max_members: Callable[[TrialSpec], int], key: Callable[[TrialSpec], tuple]
    ) -> list[Any]: ...

    def tell(self, asked: Any, outcome: TrialOutcome) -> None: ...

    def flush(self) -> int:
        """Pass on what ``tell`` queued; called once the told trials' results are on disk."""
        ...

    def has_proposal(self) -> bool: ...

    def finished(self) -> bool: ...


@dataclass
class Queued:
    spec: TrialSpec


class FixedOrder:
    """A schedule that hands out a fixed list of trials in order, one per task."""

    def __init__(self, specs: Iterable[TrialSpec]):
        self.specs = list(specs)

    def next_group(
        self, runnable: set[str], max_members: Callable[[TrialSpec], int], key: Callable[[TrialSpec], tuple]
    ) -> list[Queued]:
        return [Queued(spec) for spec in self.specs if spec.trial_id in runnable][:1]

    def tell(self, asked: Queued, outcome: TrialOutcome) -> None:
        return None

    def flush(self) -> int:
        return 0

    def has_proposal(self) -> bool:
        return True

    def finished(self) -> bool:
        return False


def recorded_results(run_dir: Path) -> tuple[dict[str, tuple[str, float]], dict[str, int], list[str]]:
    """What a run folder already holds: trial id -> (status, loss) of its finished trials,
    trial id -> attempts so far of its failed ones, and the reader's problems.

    Failed trials are not counted as finished: a failure may be transient, so a resumed
    sweep runs them again (as attempt n + 1). Nor are trials whose curve file is damaged:
    running them again is the only way to get the curve back. Reads four columns, not the
    whole rows.
    """
    read = read_trials(run_dir, columns=["trial_id", "status", "loss", "attempt"])
    damaged = damaged_curves(run_dir)
    table = read.table
    finished, failed_attempts = {}, {}
    for trial_id, status, loss, attempt in zip(
        table.column("trial_id").to_pylist(),
        table.column("status").to_pylist(),
        table.column("loss").to_pylist(),
        table.column("attempt").to_pylist(),
    ):
        if status in RECORDED_STATUSES and trial_id not in damaged:
            finished[trial_id] = (status, float("nan") if loss is None else loss)
        elif status == TrialStatus.FAILED:
            failed_attempts[trial_id] = attempt or 1
    return finished, failed_attempts, read.problems + sorted(damaged.values())


def check_memory(
    specs: list[TrialSpec], recipe: Recipe, branches: Iterable[tuple[TrialSpec, int]] = ()
) -> None:
    """Refuse a sweep whose largest trial cannot fit the memory it may use: the recipe's
    ``resources.memory_gb`` when given, else this machine's physical memory. ``branches``:
    (trunk, model copies at once) of each WSD run whose budgets branch in one task."""
    if not specs:
        return
    largest = max(specs, key=estimate_trial_memory_bytes)
    need = estimate_trial_memory_bytes(largest)
    for trunk, copies in branches:
        if estimate_group_memory_bytes(trunk, copies) > need:
            largest, need = trunk, estimate_group_memory_bytes(trunk, copies)
    if recipe.resources.memory_gb is not None:
        limit, what = (
            recipe.resources.memory_gb * 2**30,
            f"resources.memory_gb = {recipe.resources.memory_gb:g}",
        )
    else:
        limit, what = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine's memory"
    if need > limit:
        raise SweeperError(
            f"trial {largest.label} needs about {need / 2**30:.1f} GiB (estimated: weights, AdamW "
            f"state and activations of batch {largest.batch_size} x {largest.shape.seq_len}"
            f"{', with its wsd branch copies' if need > estimate_trial_memory_bytes(largest) else ''}) but "
            f"{what} is {limit / 2**30:.1f} GiB; use smaller shapes or batches, or more memory"
        )


def prepare_sweep(recipe: Recipe, run_dir: Path) -> list[TrialSpec]:
    """Every check that needs no cluster, before the run folder exists (a refused sweep
    writes nothing): the run folder can be made, the data feeds every shape, the plan is
    exactly what the recipe lists, the largest trial fits memory. Returns the plan."""
    from sweeper.train.data import check_data  # torch: only when a sweep is planned

    RunFolderLock(Path(run_dir)).check_free()  # a busy folder is refused at once (exit 3)
    check_writable_folder(Path(run_dir), "run folder")
    corpus = check_data(recipe.data, recipe.shapes)
    specs = plan_trials(recipe, corpus.identity)
    from sweeper.train.branching import branch_groups

    check_memory(specs, recipe, branch_groups(specs))  # with the WSD branch copies
    return specs


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
    on_plan: Callable[[str], None] | None = None,
    on_tick: TickCallback | None = None,
) -> SweepSummary:
    """Run every planned trial of ``recipe`` not yet recorded in ``run_dir`` (a law-guided
    search: those its sampler chooses); return counts. ``on_problem`` hears each damaged
    result file found at the start (its trial re-runs) and each repair of the stored study;
    ``on_plan`` hears one line on budgets, tokens to train and WSD branching (or the
    law-guided search's budget); ``on_tick`` hears the trials in flight about twice a second."""
    from sweeper.train.branching import plan_branching  # torch: only when a sweep runs

    specs = prepare_sweep(recipe, Path(run_dir))
    members = fused_group_size(recipe, specs)
    line = None
    if recipe.search.kind == "adaptive":
        # The search chooses each cell's trials as the laws place them, so a run's token
        # budgets are not handed out together: each trains on its own.
        planned = planned_trials(recipe, len(specs))
        note = (
            f"adaptive search: at most {planned} of the grid's {len(specs)} trials "
            f"(budget {recipe.search.budget:g}); each token budget trains on its own"
        )
        training: dict[str, Any] = {"note": note, "search": "adaptive", "planned": planned}
    else:
        branching = plan_branching(specs)
        note, training, planned = branching.note, branching.as_dict(), len(specs)
        if branching.branched:  # a run's budgets go to one task, whatever K says
            members = whole_runs(members, specs)
            line = budget_line_key
    if on_plan is not None:
        on_plan(note)
    return run_trials(
        recipe,
        Path(run_dir),
        specs,
        study_opener(recipe, specs, Path(run_dir), storage_url, line=line, on_problem=on_problem),
        address=address,
        num_cpus=num_cpus,
        save=True,
        members=members,
        training=training,
        planned=planned,
        on_start=on_start,
        on_trial=on_trial,
        on_problem=on_problem,
        on_tick=on_tick,
    )


def study_opener(
    recipe: Recipe,
    specs: list[TrialSpec],
    run_dir: Path,
    storage_url: str | None = None,
    *,
    line: Callable[[TrialSpec], Any] | None = None,
    grid_runs: int | None = None,
    cell_sizes: dict[str, float] | None = None,
    seed: int = 0,
    on_problem: Callable[[str], None] | None = None,
) -> Callable[[dict[str, tuple[str, float]]], Schedule]:
    """The sweep's schedule over ``specs`` with the recipe's search: the grid's study
    (``line``: trials handed out together, a WSD run's budgets), or the law-guided search,
    steered by the fitter's laws (``grid_runs``: the full grid's runs, the budget's base;
    ``cell_sizes``: the law's N per cell where it is not the shape's, a replayed table's).
    The schedule is opened once the recorded results are known, and reconciled with them."""

    def open_study(recorded: dict[str, tuple[str, float]]) -> Schedule:
        # Imported here so that ``sweeper status``/``fit`` never pay for Optuna.
        from sweeper.schedule import AdaptiveStudy, SweepStudy

        study: SweepStudy | AdaptiveStudy
        if recipe.search.kind == "adaptive":
            from sweeper.fit.guide import predict_optima

            study = AdaptiveStudy.open(
                recipe.name,
                specs,
                run_dir,
                storage_url,
                search=recipe.search,
                predictor=predict_optima,
                sampler_seed=seed,
                grid_runs=grid_runs,
                cell_sizes=cell_sizes,
            )
        else:
            study = SweepStudy.open(recipe.name, specs, run_dir, storage_url, sampler_seed=seed, line=line)
        if on_problem is not None:
            for repair in study.repairs:
                on_problem(repair)
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
    training: dict[str, Any] | None = None,
    planned: int | None = None,
    executor: Any = None,
    on_start: StartCallback | None = None,
    on_trial: ProgressCallback | None = None,
    on_problem: Callable[[str], None] | None = None,
    on_tick: TickCallback | None = None,
) -> SweepSummary:
    """Run each of ``specs`` not yet recorded in ``run_dir``, in the order ``open_schedule``
    (given the recorded results) decides, ``members(spec)`` trials per task at most.

    ``save`` writes the recipe into the folder (a sweep's, for ``sweeper resume``);
    ``complete_as`` is the status a complete trial is recorded with (``target`` for a target
    run); ``training`` what the plan trains (budgets, tokens: ``progress.json``'s "training").
    ``planned``: how many of ``specs`` the schedule means to run (a law-guided search's
    budget; default all). ``executor`` replaces the Ray cluster (a replay answers trials from
    a recorded table; nothing trains). Raises SweeperError before anything runs: exit code 2
    when the trials cannot run here (memory, placement), 3 when another driver holds the folder.
    """
    if executor is None:
        check_memory(specs, recipe)  # before the run folder exists: a refused sweep writes nothing
    created = not Path(run_dir).exists()
    lock = RunFolderLock(run_dir)
    lock.acquire()
    started = time.time()
    cluster = None
    try:
        recorded, failed_attempts, problems = recorded_results(run_dir)
        # After the read that reported damaged parts: compaction sets them aside.
        compact_run(run_dir)
        pending = {spec.trial_id for spec in specs if spec.trial_id not in recorded}
        planned = len(specs) if planned is None else planned
        already_recorded = len(specs) - len(pending)
        schedule: Schedule | None = None
        if pending and recorded:
            # A law-guided search ends before its grid does: its study (rebuilt from the
            # record where it was lost) says whether it is done, before any cluster starts.
            schedule = open_schedule(recorded)
            if schedule.finished():
                pending, planned = set(), already_recorded
        to_run = min(len(pending), max(0, planned - already_recorded))
        summary = SweepSummary(
            run_dir,
            planned=planned,
            already_recorded=already_recorded,
            max_failed_fraction=recipe.max_failed_fraction,
            training=training or {},
        )
        if pending and executor is None:  # nothing to run: no cluster to start, and no Ray to import
            from sweeper.execute import PlacementError, TrialExecutor, connect, disconnect

            cluster = connect(address, num_cpus=num_cpus)
            summary.dashboard_url = cluster.dashboard_url
            try:
                # Refuses at once trials that no node can ever hold.
                executor = TrialExecutor(recipe.resources, dashboard_url=cluster.dashboard_url)
            except PlacementError as error:
                if created:
                    lock.remove()  # refused: the folder this driver made goes with it
                raise SweeperError(str(error)) from None
        if save:
            save_recipe(recipe, run_dir)
        if on_problem is not None:
            for problem in problems:
                on_problem(f"{problem}; its trial runs again")
        if on_start is not None:
            on_start(planned, to_run, summary.dashboard_url)
        if pending:
            if schedule is None:
                schedule = open_schedule(recorded)
            sink = ResultSink(
                run_dir, max_buffered=RESULT_BUFFER_TRIALS, max_buffer_seconds=RESULT_BUFFER_SECONDS
            )
            _drive(
                schedule,
                executor,
                sink,
                pending,
                summary,
                on_trial,
                members,
                failed_attempts,
                complete_as,
                recipe.name,
                on_tick,
            )
            compact_run(run_dir)
        summary.wall_seconds = time.time() - started
        planned_ids = {spec.trial_id for spec in specs}
        statuses = read_trials(run_dir, columns=["status"]).table
        summary.sweep_counts = Counter(
            status
            for trial_id, status in zip(
                statuses.column("trial_id").to_pylist(), statuses.column("status").to_pylist()
            )
            if trial_id in planned_ids
        )
        _write_progress(run_dir, summary, running=[], finished=True)
        return summary
    except OSError as error:
        if error.errno not in _STORAGE_ERRNOS:
            raise
        raise SweeperError(
            f"cannot write {error.filename or run_dir}: {error.strerror}; recorded trials "
            f"are kept, free space and run `sweeper resume {run_dir}`"
        ) from None
    finally:
        if cluster is not None and cluster.started_here:
            disconnect()
        lock.release()


def _drive(
    schedule: Schedule,
    executor: Any,
    sink: ResultSink,
    pending: set[str],
    summary: SweepSummary,
    on_trial: ProgressCallback | None,
    max_members: Callable[[TrialSpec], int],
    failed_attempts: dict[str, int],
    complete_as: TrialStatus,
    name: str,
    on_tick: TickCallback | None = None,
) -> None:
    """Keep the cluster full until every pending trial has finished, or the schedule says it
    is finished (a law-guided search runs only what it chooses). A round costs O(trials
    running + trials finished): the runnable set shrinks as trials start, a grid's choice is
    O(1), and results and Optuna tells are written in batches."""
    from sweeper.execute.metrics import SweepMetrics  # Ray metrics: see execute/metrics.py

    metrics = SweepMetrics(name)
    asked_by_id = {}
    runnable = set(pending)  # neither recorded nor started: only shrinks
    progress_written = 0.0
    try:
        while pending and not schedule.finished():
            while runnable and len(executor.in_flight) < executor.capacity() and schedule.has_proposal():
                group = schedule.next_group(runnable, max_members, fusion_key)
                if not group:
                    break
                executor.submit([asked.spec for asked in group])
                for asked in group:
                    asked_by_id[asked.spec.trial_id] = asked
                    runnable.discard(asked.spec.trial_id)
            if time.monotonic() - progress_written >= PROGRESS_SECONDS:
                running = executor.in_flight_trials()
                metrics.progress(
                    pending=len(pending) - len(running),
                    running=len(running),
                    counts=summary.counts,
                    recorded=summary.already_recorded,
                )
                where, live = executor.where(), executor.live()
                entries = [
                    {
                        "trial_id": s.trial_id,
                        "label": s.label,
                        **where.get(s.trial_id, {}),
                        **live.get(s.trial_id, {}),
                    }
                    for s in running
                ]
                _write_progress(sink.run_dir, summary, running=entries, finished=False)
                if on_tick is not None:
                    on_tick(entries, summary.counts)
                progress_written = time.monotonic()
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
            # A search that proposes from told results only must not wait on the buffer.
            if sink.flush_due() or (sink.buffered and not schedule.has_proposal()):
                sink.flush()
            if sink.buffered == 0:
                schedule.flush()  # only trials whose results are on disk
            if not executor.in_flight and not schedule.has_proposal() and not schedule.finished():
                break  # nothing running, nothing told to wait for, and nothing to ask: it has ended
    finally:
        sink.flush()
        schedule.flush()
    metrics.progress(pending=0, running=0, counts=summary.counts, recorded=summary.already_recorded)


def _write_progress(run_dir: Path, summary: SweepSummary, running: list[dict], finished: bool) -> None:
    """``running``: one entry per trial in flight (see TickCallback)."""
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
            "training": summary.training,
            "running": running,
        },
    )
