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
from sweeper.plan import (
    TrialSpec,
    estimate_group_memory_bytes,
    estimate_trial_memory_bytes,
    fusion_key,
    plan_trials,
)
from sweeper.recipe import Recipe
from sweeper.results import ResultSink, read_trials

LOCK_FILE = ".driver.lock"
PROGRESS_FILE = "progress.json"
RECIPE_FILE = "recipe.yaml"


class SweepError(RuntimeError):
    """A sweep that cannot start; the message is one line for the user, ``exit_code`` the
    CLI's (2: the recipe asks for the impossible, 3: the run folder is busy)."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


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
        return self.sweep_counts["failed"] / total if total else 0.0

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
                "wait for it to finish or stop it first",
                exit_code=3,
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
        if status in ("complete", "diverged"):
            finished[trial_id] = (status, float("nan") if loss is None else loss)
        elif status == "failed":
            failed_attempts[trial_id] = attempt or 1
    return finished, failed_attempts, read.problems


def save_recipe(recipe: Recipe, run_dir: Path) -> None:
    path = run_dir / RECIPE_FILE
    temporary = path.with_name(f".{RECIPE_FILE}.tmp")
    temporary.write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    os.replace(temporary, path)


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
        raise SweepError(
            f"trial {largest.label} needs about {need / 2**30:.1f} GiB (estimated: weights, AdamW "
            f"state and activations of batch {largest.batch_size} x {largest.shape.seq_len}) but "
            f"{what} is {limit / 2**30:.1f} GiB; use smaller shapes or batches, or more memory"
        )


MAX_AUTO_MEMBERS = 8  # the benchmark point; larger K gains little more
AUTO_GROUP_MEMORY_BYTES = 2 * 2**30  # a fused task's share when the recipe names no memory
# On a CPU, fusing pays only where per-operation overhead dominates a step, i.e. for small
# batches: benchmarks/trainer_throughput.py measured K=8 fused at 2.0-2.4x (d32) and
# 1.3-1.8x (d64) the sequential rate with 128-token batches, but 1.2x with 1024-token ones.
CPU_AUTO_FUSE_MAX_BATCH_TOKENS = 256


def fused_group_size(recipe: Recipe, specs: list[TrialSpec]) -> Callable[[TrialSpec], int]:
    """For each trial, K: the most trials its fused task may train, from ``recipe.fuse``.

    'auto' fuses the trials of one ``fusion_key`` (shape, batch, seed: the learning rates
    and token budgets of one model size), up to MAX_AUTO_MEMBERS while the group fits
    ``resources.memory_gb`` (or AUTO_GROUP_MEMORY_BYTES) — on GPUs always, on CPUs only for
    batches of at most CPU_AUTO_FUSE_MAX_BATCH_TOKENS, where it measured faster. An explicit
    K is taken as given; 'off' is K = 1.
    """
    if recipe.fuse == "off" or not specs:
        return lambda spec: 1
    if isinstance(recipe.fuse, int):
        fixed = recipe.fuse
        return lambda spec: fixed
    budget = recipe.resources.memory_gb * 2**30 if recipe.resources.memory_gb else AUTO_GROUP_MEMORY_BYTES
    on_gpu = recipe.resources.gpus > 0
    siblings = Counter(fusion_key(spec) for spec in specs)

    def members(spec: TrialSpec) -> int:
        if not on_gpu and spec.batch_size_tokens > CPU_AUTO_FUSE_MAX_BATCH_TOKENS:
            return 1
        count = min(MAX_AUTO_MEMBERS, siblings[fusion_key(spec)])
        while count > 1 and estimate_group_memory_bytes(spec, count) > budget:
            count -= 1
        return count

    return members


def run_sweep(
    recipe: Recipe,
    run_dir: Path,
    *,
    address: str | None = None,
    storage_url: str | None = None,
    num_cpus: int | None = None,
    on_start: Callable[[int, int, str | None], None] | None = None,
    on_trial: ProgressCallback | None = None,
    on_problem: Callable[[str], None] | None = None,
    plan: list[TrialSpec] | None = None,
    executor=None,  # noqa: ANN001 (anything with TrialExecutor's methods, e.g. a ReplayExecutor)
    grid_runs: int | None = None,
    seed: int = 0,
    cell_sizes: dict[str, float] | None = None,
) -> SweepSummary:
    """Run every planned trial of ``recipe`` not yet recorded in ``run_dir`` (a law-guided
    search: those its sampler chooses); return counts. ``on_problem`` hears each damaged
    result file found at the start (its trial re-runs). ``plan`` and ``executor`` replace
    the recipe's plan and the Ray cluster (a replay of a recorded table); ``grid_runs`` is
    what the full plan would run, for the adaptive budget; ``cell_sizes`` the law's N per
    cell where a replayed table's differs from the shape's."""
    # Imported here so that ``sweeper status``/``fit`` never pay for Ray, Optuna or torch.
    from sweeper.execute import PlacementError, TrialExecutor, connect, disconnect
    from sweeper.fit.guide import predict_optima
    from sweeper.schedule import SweepStudy
    from sweeper.schedule.adaptive import budget_runs

    run_dir = Path(run_dir)
    if plan is None:
        from sweeper.train import data_identity

        specs = plan_trials(recipe, data_identity(recipe.data))
        check_memory(specs, recipe)  # before the run folder exists: a refused sweep writes nothing
    else:
        specs = plan
    lock = RunFolderLock(run_dir)
    lock.acquire()
    started = time.time()
    cluster = None
    try:
        if plan is None:
            save_recipe(recipe, run_dir)
        recorded, failed_attempts, problems = recorded_results(run_dir)
        if on_problem is not None:
            for problem in problems:
                on_problem(problem)
        pending = {spec.trial_id for spec in specs if spec.trial_id not in recorded}
        planned, already_recorded = len(specs), len(specs) - len(pending)
        if recipe.search.kind == "adaptive":  # at most its budget runs, not the whole grid
            planned = min(planned, budget_runs(recipe.search.budget, grid_runs or len(specs)))
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
                raise SweepError(str(error), exit_code=2) from None
        if on_start is not None:
            on_start(planned, to_run, summary.dashboard_url)
        if pending:
            study = SweepStudy.open(recipe.name, specs, run_dir, storage_url, sampler_seed=seed, search=recipe.search,
                                    predictor=predict_optima, grid_runs=grid_runs, cell_sizes=cell_sizes)
            study.reconcile(recorded)
            members = fused_group_size(recipe, specs)
            _drive(study, executor, ResultSink(run_dir), pending, summary, on_trial, members, failed_attempts)
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


def _drive(study, executor, sink: ResultSink, pending: set[str], summary: SweepSummary,
           on_trial: ProgressCallback | None, max_members: Callable[[TrialSpec], int],
           failed_attempts: dict[str, int]) -> None:
    from sweeper.execute.metrics import SweepMetrics  # Ray metrics: see execute/metrics.py

    metrics = SweepMetrics(study.study.study_name)
    asked_by_id = {}
    while pending and not study.finished():
        runnable = pending - executor.running_ids()
        while runnable and len(executor.in_flight) < executor.capacity() and study.has_proposal():
            group = study.next_group(runnable, max_members, fusion_key)
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
            # Record first, then tell: the Parquet record is never behind the study.
            sink.record(spec, outcome, attempt=failed_attempts.get(spec.trial_id, 0) + 1)
            study.tell(asked_by_id.pop(spec.trial_id), outcome)
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
            "running": [{"trial_id": s.trial_id, "label": s.label, **where.get(s.trial_id, {})} for s in running],
        },
    )
