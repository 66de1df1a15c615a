"""Schedule: one Optuna study per sweep holds what was tried; the grid decides what runs next.

A grid's plan is fixed, so choosing the next trial needs no search: the planned trials are
walked longest first, trials of one length in one seeded permutation (a fixed, reproducible
random order, so early results already span the grid), and fused groups are drawn from
per-group queues in the same order.
Each choice costs O(1) however large the plan. (Optuna's BruteForceSampler, used before,
rebuilt its tree from every earlier trial on each ask: O(n) per trial, ~200 ms per ask late
in a 20,000-trial sweep.)

Optuna is told in batches, off the hot path: each finished trial becomes one complete
Optuna trial (its parameters, value, state and attributes in one ``add_trials`` record: one
durable write per finished trial to the journal), sent by ``flush`` after the results
holding those trials are on disk. The study is persisted (an Optuna journal file in the
run folder by default, or any Optuna storage URL, e.g. PostgreSQL for many drivers) and is
the *record of what Optuna saw*, not of what finished: the Parquet results are. A driver
killed with unsent tells loses nothing; ``reconcile`` tells the study of every recorded
trial it lacks when the sweep resumes.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Container, Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from sweeper.outcome import TrialOutcome, TrialStatus
from sweeper.plan import TrialSpec

STUDY_FILE = "optuna.journal"


def repair_journal(path: Path) -> str | None:
    """Cut a torn last line off the journal file at ``path``; say what was cut, or None.

    A kill or a full disk can stop an append mid-line. Optuna skips such a tail when it
    reads, but its next append lands on the same line and turns it into a line no reader
    can parse, so the study could never be opened again. Cutting the tail loses at most the
    operation that was being written: the study is the decider, the Parquet record is the
    truth, and the driver reconciles the two at start (a trial it loses runs again).
    """
    if not path.is_file():
        return None
    with open(path, "rb+") as journal:
        size = journal.seek(0, os.SEEK_END)
        if size == 0:
            return None
        # Read back from the end to the last complete line (lines are a few hundred bytes).
        keep, chunk = size, 4096
        while keep > 0:
            start = max(0, keep - chunk)
            journal.seek(start)
            block = journal.read(keep - start)
            newline = block.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            keep = start
        if keep == size:
            return None
        journal.truncate(keep)
        journal.flush()
        os.fsync(journal.fileno())
    return f"{path}: cut a torn last line ({size - keep} bytes) left by an interrupted write"


def _journal_parses(path: Path) -> bool:
    with open(path, "rb") as journal:
        for line in journal:
            try:
                json.loads(line)
            except ValueError:
                return False
    return True


def set_aside_journal(path: Path) -> str:
    """Move an unreadable journal aside (kept for inspection); the study starts afresh and
    the driver re-derives what is done from the Parquet record."""
    aside = path.with_name(f"{path.name}.unreadable-{int(time.time())}")
    os.replace(path, aside)
    return (
        f"{path}: unreadable study journal moved to {aside.name}; the study restarts from the recorded trials"
    )


def storage_for(run_dir: Path, storage_url: str | None) -> optuna.storages.BaseStorage | str:
    """The study's storage: the URL given, else a journal file in the run folder.

    A journal file rather than SQLite because several processes may append to it (SQLite
    locks up under concurrent writers, and Optuna's docs advise against it on NFS).
    """
    if storage_url:
        return _database_storage(storage_url)
    run_dir.mkdir(parents=True, exist_ok=True)
    return BatchedJournalStorage(JournalFileBackend(str(run_dir / STUDY_FILE)))


class BatchedJournalStorage(JournalStorage):
    """Optuna's journal storage, plus ``batch()``: the operations made inside it go to the
    file as one append (one lock, one write, one fsync) when it ends.

    Optuna appends each operation on its own, and ``add_trials`` is one ``create_new_trial``
    per trial: 20,000 told trials were 20,000 fsyncs (24 s of a 20,000-run replay's 51 s
    wall, on a local disk) and 20,000 re-reads of the file's tail. Batching is safe for the
    study: it is told only after the results holding the trials are on disk, and a batch
    lost to a kill is re-told from them at the next start (``SweepStudy.reconcile``). Within
    a batch this storage is only written (reads would not see the batch), which is all
    ``add_trials`` does: it ignores the trial ids ``create_new_trial`` returns. Hooks into
    two private methods of JournalStorage; if Optuna renames them, the batch is simply not
    formed and every operation is appended on its own as before (tests/test_schedule.py
    checks that a batch is one append).
    """

    def __init__(self, log_storage: JournalFileBackend) -> None:
        self._batch: list[dict[str, Any]] | None = None
        super().__init__(log_storage)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        # create_new_trial reads the id of this process's last created trial after its sync
        # (a no-op here); Optuna sets it only once this process has created one (-1: none,
        # as Optuna's own snapshot restore sets it). add_trials ignores the value.
        replay = self._replay_result
        if not hasattr(replay, "_last_created_trial_id_by_this_process"):
            replay._last_created_trial_id_by_this_process = -1
        self._batch = []
        try:
            yield
        finally:
            # What was formed before an error is written too, as unbatched calls would have.
            logs, self._batch = self._batch, None
            if logs:
                with self._thread_lock:
                    self._backend.append_logs(logs)
                    self._sync_with_backend()

    def _write_log(self, op_code: int, extra_fields: dict[str, Any]) -> None:
        if self._batch is None:
            super()._write_log(op_code, extra_fields)
        else:
            self._batch.append(
                {"op_code": op_code, "worker_id": self._replay_result.worker_id, **extra_fields}
            )

    def _sync_with_backend(self) -> None:
        if self._batch is None:
            super()._sync_with_backend()


def add_trials(study: optuna.Study, trials: list[FrozenTrial]) -> None:
    """``study.add_trials``, as one append where the storage can batch (the journal)."""
    storage = study._storage
    batch = storage.batch() if isinstance(storage, BatchedJournalStorage) else contextlib.nullcontext()
    with batch:
        study.add_trials(trials)


def _database_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's storage for a database URL. Drivers that start together on a new database
    race to create its tables (PostgreSQL then refuses the loser's duplicate types); the
    loser's retry finds the tables made."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(url)
        except (IntegrityError, ProgrammingError):
            if attempt == 2:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def open_study(
    name: str,
    run_dir: Path,
    storage_url: str | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
) -> tuple[optuna.Study, list[str]]:
    """The sweep's Optuna study (created, or loaded if it exists) and what was done to its
    stored journal to open it (a torn tail cut, an unreadable file set aside)."""
    # Optuna logs every tell (INFO); the driver prints its own progress. Set when a
    # driver opens its study, not at import, so that importing sweeper leaves the user's
    # Optuna logging alone.
    optuna.logging.set_verbosity(logging.ERROR)
    journal = Path(run_dir) / STUDY_FILE
    repairs = [] if storage_url else [r for r in [repair_journal(journal)] if r]

    def create() -> optuna.Study:
        return optuna.create_study(
            study_name=name,
            storage=storage_for(Path(run_dir), storage_url),
            sampler=sampler,
            direction="minimize",
            load_if_exists=True,
        )

    try:
        study = create()
    except ValueError:  # json.JSONDecodeError included: a line broken inside the file
        if storage_url or not journal.is_file() or _journal_parses(journal):
            raise
        repairs.append(set_aside_journal(journal))
        study = create()
    return study, repairs


@dataclass
class Asked:
    spec: TrialSpec


def _expected_length(spec: TrialSpec) -> tuple[int, int]:
    """Sort key of a trial's expected duration: its optimizer steps, then its model's size
    (per-step time grows with both; exact costs depend on the hardware and are not needed
    to put long trials first)."""
    return spec.tokens_budget // spec.batch_size_tokens, spec.n_params


class SweepStudy:
    """The grid side of a sweep over a fixed plan of trial specs.

    ``runnable`` (given to ``next_trial``/``next_group``) holds the trial ids neither
    recorded nor running; it is only asked ``in`` (O(1)), and a trial passed over because
    it was not runnable is not offered again by this object: the driver's runnable set only
    shrinks while it runs (a trial leaves it when it starts or is recorded).
    """

    def __init__(
        self,
        study: optuna.Study,
        specs: list[TrialSpec],
        sampler_seed: int = 0,
        line: Callable[[TrialSpec], Hashable] | None = None,
        repairs: list[str] | None = None,
    ):
        self.study = study
        # Trials of one ``line`` value are handed out together or not at all (next_group).
        self.line = line
        self.repairs = repairs or []  # what was done to the stored study to open it
        self.specs_by_id = {spec.trial_id: spec for spec in specs}
        # Ranges, not lists of choices, for the numbers: every trial's record carries its
        # distributions, and a list of 200 learning rates made each record ~5 KB and each
        # tell O(grid side) in Optuna's checks.
        lrs, batches, seeds = [s.lr for s in specs], [s.batch_size for s in specs], [s.seed for s in specs]
        self.distributions: dict[str, BaseDistribution] = {
            "cell": CategoricalDistribution(sorted({s.cell_id for s in specs})),
            "lr": FloatDistribution(min(lrs, default=1.0), max(lrs, default=1.0), log=True),
            "batch_size": IntDistribution(min(batches, default=1), max(batches, default=1), log=True),
            "seed": IntDistribution(min(seeds, default=0), max(seeds, default=0)),
        }
        order = [spec.trial_id for spec in specs]
        random.Random(sampler_seed).shuffle(order)
        # Longest first (the classic LPT rule for filling workers): a sweep's trials differ
        # in length by 100x (steps = D / B, times the model's size), and the longest started
        # last left one worker training alone for minutes at the end of the demo. The seeded
        # permutation still orders trials of one length (stable sort).
        order.sort(key=lambda trial_id: _expected_length(self.specs_by_id[trial_id]), reverse=True)
        self._order = order
        self._cursor = 0
        self._taken: set[str] = set()
        self._queues: dict[Hashable, list[str]] = {}  # one per group key, in the same order
        self._queue_cursors: dict[Hashable, int] = {}
        self._group_key: Callable[[TrialSpec], Hashable] | None = None
        self._unsent: list[FrozenTrial] = []
        self._lines: dict[Hashable, list[str]] = {}
        if line is not None:
            for trial_id in order:
                self._lines.setdefault(line(self.specs_by_id[trial_id]), []).append(trial_id)

    @classmethod
    def open(
        cls,
        name: str,
        specs: list[TrialSpec],
        run_dir: Path,
        storage_url: str | None = None,
        sampler_seed: int = 0,
        line: Callable[[TrialSpec], Hashable] | None = None,
    ) -> SweepStudy:
        study, repairs = open_study(name, run_dir, storage_url)
        return cls(study, specs, sampler_seed, line, repairs)

    def reconcile(self, recorded: dict[str, tuple[str, float]]) -> int:
        """Bring the study in line with the results when a sweep (re)starts: trials left
        RUNNING (by a driver that asked Optuna trial by trial) are closed, and every recorded
        trial the study lacks is told. One pass over the study; returns how many were told."""
        known: set[str] = set()
        for trial in self.study.get_trials(deepcopy=False):
            trial_id = trial.user_attrs.get("trial_id")
            if trial.state == TrialState.RUNNING:
                self.study.tell(trial.number, state=TrialState.FAIL)
            elif trial_id is not None:
                known.add(trial_id)
        missing = [
            trial_id for trial_id in recorded if trial_id not in known and trial_id in self.specs_by_id
        ]
        for trial_id in missing:
            self._unsent.append(self._frozen(self.specs_by_id[trial_id], *recorded[trial_id]))
        self.flush()
        return len(missing)

    def next_trial(self, runnable: Container[str]) -> Asked | None:
        """The next runnable trial in the plan's seeded order, or None when none is left."""
        while self._cursor < len(self._order):
            trial_id = self._order[self._cursor]
            self._cursor += 1
            if trial_id not in self._taken and trial_id in runnable:
                self._taken.add(trial_id)
                return Asked(self.specs_by_id[trial_id])
        return None

    def next_group(
        self,
        runnable: Container[str],
        max_members: Callable[[TrialSpec], int],
        key: Callable[[TrialSpec], Hashable],
    ) -> list[Asked]:
        """The next trial plus up to ``max_members(it) - 1`` runnable trials with the same
        ``key`` (trials that can train fused), taken from that key's queue: O(group size)
        amortised. Each member is told to Optuna as its own trial."""
        first = self.next_trial(runnable)
        if first is None:
            return []
        group = [first]
        limit = max_members(first.spec)
        if limit <= 1:
            return group
        group_key = key(first.spec)
        if self.line is not None:  # the chosen trial's line-mates first (WSD budgets of one run)
            group += self._take(self._lines[self.line(first.spec)], runnable)
        queue = self._queue(key, group_key)
        cursor = self._queue_cursors[group_key]
        while cursor < len(queue) and len(group) < limit:
            trial_id = queue[cursor]
            if trial_id in self._taken or trial_id not in runnable:
                cursor += 1
                continue
            mates = [trial_id] if self.line is None else self._lines[self.line(self.specs_by_id[trial_id])]
            runnable_mates = [m for m in mates if m not in self._taken and m in runnable]
            if len(group) + len(runnable_mates) > limit:
                break  # a whole line or nothing: it waits for a group of its own
            group += self._take(runnable_mates, runnable)
            cursor += 1
        self._queue_cursors[group_key] = cursor
        return group

    def has_proposal(self) -> bool:
        """A grid can always hand out its next planned trial."""
        return True

    def finished(self) -> bool:
        """A grid is done when every planned trial has run (the driver's pending set says so)."""
        return False

    def _take(self, trial_ids: list[str], runnable: Container[str]) -> list[Asked]:
        taken = [t for t in trial_ids if t not in self._taken and t in runnable]
        self._taken.update(taken)
        return [Asked(self.specs_by_id[t]) for t in taken]

    def _queue(self, key: Callable[[TrialSpec], Hashable], group_key: Hashable) -> list[str]:
        if self._group_key is not key:  # built once per key function: one pass over the plan
            self._group_key = key
            self._queues, self._queue_cursors = {}, {}
            for trial_id in self._order:
                self._queues.setdefault(key(self.specs_by_id[trial_id]), []).append(trial_id)
            self._queue_cursors = {k: 0 for k in self._queues}
        return self._queues[group_key]

    def tell(self, asked: Asked, outcome: TrialOutcome) -> None:
        """Queue the outcome for Optuna; ``flush`` sends it (after the results are on disk).
        With it go the trial's validation curve (Optuna's intermediate values, step = tokens
        trained, so batch sizes compare on one axis), what optuna-dashboard draws as learning
        curves: one record per trial, never a write per step."""
        curve = {
            point.tokens: point.val_loss
            for point in outcome.curve
            if point.val_loss is not None and math.isfinite(point.val_loss)
        }
        self._unsent.append(self._frozen(asked.spec, outcome.status, outcome.final_val_loss, curve))

    @property
    def unsent(self) -> int:
        return len(self._unsent)

    def flush(self) -> int:
        """Tell Optuna every queued trial (one storage record each); return how many."""
        sent, self._unsent = self._unsent, []
        if sent:
            add_trials(self.study, sent)
        return len(sent)

    def _frozen(
        self, spec: TrialSpec, status: str, loss: float, curve: dict[int, float] | None = None
    ) -> FrozenTrial:
        return frozen_trial(spec, self.distributions, status, loss, curve)


def trial_params(spec: TrialSpec) -> dict[str, Any]:
    """The Optuna parameters of a planned trial."""
    return {"cell": spec.cell_id, "lr": spec.lr, "batch_size": spec.batch_size, "seed": spec.seed}


def trial_attrs(spec: TrialSpec, status: str) -> dict[str, Any]:
    """A trial's Optuna user attributes: N, D and B in tokens (the ``cell`` parameter alone
    hides them), its id and status."""
    return {
        "trial_id": spec.trial_id,
        "status": str(status),
        "n_params": spec.shape.n_params_nonembedding,
        "tokens_budget": spec.tokens_budget,
        "batch_size_tokens": spec.batch_size_tokens,
        "lr": spec.lr,
        "shape": spec.shape.name,
    }


def frozen_trial(
    spec: TrialSpec,
    distributions: dict[str, BaseDistribution],
    status: str,
    loss: float,
    curve: dict[int, float] | None = None,
) -> FrozenTrial:
    """One finished trial as a complete Optuna trial (one storage record).

    Built as optuna.trial.create_trial builds it, less that function's check for deprecated
    distribution classes, which compares the cell distribution choice by choice: O(cells)
    per told trial (6 of a 20,000-run replay's 50 s with 200 cells)."""
    now = datetime.datetime.now()
    complete = status == TrialStatus.COMPLETE and math.isfinite(loss)
    return FrozenTrial(
        number=-1,
        trial_id=-1,
        # Diverged and failed runs have no loss to compare; FAIL keeps them out of best_trial.
        state=TrialState.COMPLETE if complete else TrialState.FAIL,
        value=loss if complete else None,
        values=None,
        datetime_start=now,
        datetime_complete=now,
        params=trial_params(spec),
        distributions=distributions,
        user_attrs=trial_attrs(spec, status),
        system_attrs={},
        intermediate_values=curve or {},
    )  # study.add_trials validates it
