"""Schedule: one Optuna study per sweep decides which planned trial runs next (ask/tell).

An exhaustive grid sampler walks the grid cell x lr x batch size x seed in random order, and
the study is persisted (an Optuna journal file in the run folder by default, or any Optuna
storage URL) so a restarted driver sees what was asked and told before. The study is the
*decider*, not the record: the Parquet results are the record of what finished. That is why
``next_trial`` is given the trials still to run, and re-points the sampler when the two
disagree (after a crash, a trial can be RUNNING in the study but lost in fact).
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import BaseJournalBackend, JournalFileBackend
from optuna.trial import TrialState

from sweeper.outcome import TrialOutcome, TrialStatus
from sweeper.plan import TrialSpec

STUDY_FILE = "optuna.journal"


def _grid_key(cell_id: str, lr: float, batch_size: int, seed: int) -> tuple:
    return (cell_id, float(lr), int(batch_size), int(seed))


def _spec_key(spec: TrialSpec) -> tuple:
    return _grid_key(spec.cell_id, spec.lr, spec.batch_size, spec.seed)


class DeferringJournalBackend(BaseJournalBackend):
    """A journal backend that can hold appends back and write them as one.

    Optuna's JournalStorage appends (and fsyncs) one log line per operation; telling a
    finished trial its curve, attributes and result is a dozen operations. Inside
    ``deferred()`` they are collected and appended together, under one lock and one fsync:
    one durable write per finished trial. Reads pass through (the storage re-reads the file
    after each operation, and the held-back lines are not there yet, which nothing that
    runs inside ``deferred()`` depends on: it only writes).
    """

    def __init__(self, inner: BaseJournalBackend):
        self.inner = inner
        self._held: list[dict[str, Any]] | None = None

    def read_logs(self, log_number_from: int) -> list[dict[str, Any]]:
        return list(self.inner.read_logs(log_number_from))

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        if self._held is not None:
            self._held.extend(logs)
        else:
            self.inner.append_logs(logs)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self._held = []
        try:
            yield
        finally:
            held, self._held = self._held, None
            if held:
                self.inner.append_logs(held)


def storage_for(run_dir: Path, storage_url: str | None) -> tuple[
        optuna.storages.BaseStorage | str, DeferringJournalBackend | None]:
    """The study's storage: the URL given, else a journal file in the run folder (and then
    its backend, to group a finished trial's writes).

    A journal file rather than SQLite because several processes may append to it (SQLite
    locks up under concurrent writers, and Optuna's docs advise against it on NFS).
    """
    if storage_url:
        return storage_url, None
    run_dir.mkdir(parents=True, exist_ok=True)
    backend = DeferringJournalBackend(JournalFileBackend(str(run_dir / STUDY_FILE)))
    return JournalStorage(backend), backend


class AskTellGridSampler(optuna.samplers.BruteForceSampler):
    """Exhaustive grid sampling for an ask/tell loop.

    BruteForceSampler rather than GridSampler: it tracks visited points by their parameter
    values, so trials enqueued with fixed parameters (the members of a fused group, the
    requeued trials of a dead driver) count as visited and are never proposed again;
    GridSampler only counts points it assigned itself. Its ``after_trial`` calls
    ``study.stop()`` once the grid is covered, which works only inside ``study.optimize``;
    here the driver's own loop knows when the plan is done, so that hook does nothing.
    """

    def after_trial(self, study, trial, state, values) -> None:  # noqa: ANN001
        return None


@dataclass
class Asked:
    trial: optuna.Trial  # the running Optuna trial, to tell it later
    spec: TrialSpec


class SweepStudy:
    """The ask/tell side of a sweep over a fixed plan of trial specs."""

    def __init__(self, study: optuna.Study, specs: list[TrialSpec],
                 backend: DeferringJournalBackend | None = None):
        self.study = study
        self.backend = backend  # the run folder's journal, when the study is kept there
        self.specs_by_key = {_spec_key(spec): spec for spec in specs}
        self.distributions: dict[str, BaseDistribution] = {
            "cell": CategoricalDistribution(sorted({s.cell_id for s in specs})),
            "lr": CategoricalDistribution(sorted({s.lr for s in specs})),
            "batch_size": CategoricalDistribution(sorted({s.batch_size for s in specs})),
            "seed": CategoricalDistribution(sorted({s.seed for s in specs})),
        }

    @classmethod
    def open(
        cls,
        name: str,
        specs: list[TrialSpec],
        run_dir: Path,
        storage_url: str | None = None,
        sampler_seed: int = 0,
    ) -> SweepStudy:
        # Optuna logs every tell (INFO) and every FAIL (WARNING); the driver prints its own
        # progress, and closing re-proposed or abandoned points as FAIL is expected here (see
        # next_trial). Set when a driver opens its study, not at import, so that importing
        # sweeper leaves the user's Optuna logging alone.
        optuna.logging.set_verbosity(logging.ERROR)
        with warnings.catch_warnings():
            # BruteForceSampler is marked experimental; its contract is all this loop uses.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = AskTellGridSampler(seed=sampler_seed)
        storage, backend = storage_for(Path(run_dir), storage_url)
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=sampler,
            direction="minimize",
            load_if_exists=True,
        )
        return cls(study, specs, backend)

    def reconcile(self, recorded: dict[str, tuple[str, float]]) -> int:
        """Close trials a dead driver left RUNNING: told with the recorded result where the
        trial finished, else failed as abandoned (its spec is still pending, so it is re-run).
        Returns how many were closed."""
        closed = 0
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            spec = self._spec_of(trial.params)
            if spec is not None and spec.trial_id in recorded:
                self._close(trial.number, *recorded[spec.trial_id])
            else:
                self.study.tell(trial.number, state=TrialState.FAIL)
            closed += 1
        return closed

    def next_trial(self, runnable: set[str]) -> Asked | None:
        """Ask for the next trial among ``runnable`` (trial ids neither recorded nor running).

        The sampler's choice is taken when it is runnable. When it is not (the point was
        recorded by an earlier driver whose study was lost, or a dead driver's trial was
        closed as abandoned), that ask is closed and a runnable spec is enqueued explicitly,
        so no planned trial is ever skipped.
        """
        if not runnable:
            return None
        trial = self.study.ask(self.distributions)
        spec = self._spec_of(trial.params)
        if spec is not None and spec.trial_id in runnable:
            trial.set_user_attr("trial_id", spec.trial_id)
            return Asked(trial, spec)
        self.study.tell(trial.number, state=TrialState.FAIL)
        chosen = next(s for s in self.specs_by_key.values() if s.trial_id in runnable)
        return self._ask_fixed(chosen)

    def next_group(
        self,
        runnable: set[str],
        max_members: Callable[[TrialSpec], int],
        key: Callable[[TrialSpec], tuple],
    ) -> list[Asked]:
        """The sampler's next trial plus up to ``max_members(it) - 1`` runnable trials with
        the same ``key`` (trials that can train fused). Each member is its own Optuna trial,
        so the study sees one trial per configuration whether or not it ran fused."""
        first = self.next_trial(runnable)
        if first is None:
            return []
        group = [first]
        group_key = key(first.spec)
        limit = max_members(first.spec)
        for spec in self.specs_by_key.values():
            if len(group) >= limit:
                break
            if spec.trial_id in runnable and spec.trial_id != first.spec.trial_id and key(spec) == group_key:
                group.append(self._ask_fixed(spec))
        return group

    def _ask_fixed(self, spec: TrialSpec) -> Asked:
        self.study.enqueue_trial(
            {"cell": spec.cell_id, "lr": spec.lr, "batch_size": spec.batch_size, "seed": spec.seed}
        )
        trial = self.study.ask(self.distributions)
        trial.set_user_attr("trial_id", spec.trial_id)
        return Asked(trial, spec)

    def tell(self, asked: Asked, outcome: TrialOutcome) -> None:
        """Close the trial with its result, its curve of validation losses (Optuna's
        intermediate values, step = tokens trained, so batch sizes compare on one axis) and
        its N, D, B in tokens and lr as user attributes (the ``cell`` parameter hides them):
        what optuna-dashboard draws as learning curves and lists per trial. Reported once
        the trial has ended, as one journal write, not per step."""
        spec, trial = asked.spec, asked.trial
        deferred = self.backend.deferred() if self.backend is not None else contextlib.nullcontext()
        with deferred:
            for point in outcome.curve:
                if point.val_loss is not None and math.isfinite(point.val_loss):
                    trial.report(point.val_loss, point.tokens)
            attributes = {
                "status": str(outcome.status), "n_params": spec.shape.n_params_nonembedding,
                "tokens_budget": spec.tokens_budget, "batch_size_tokens": spec.batch_size_tokens,
                "lr": spec.lr, "shape": spec.shape.name,
            }
            for key, value in attributes.items():
                trial.set_user_attr(key, value)
            self._close(trial.number, outcome.status, outcome.final_val_loss)

    def _close(self, number: int, status: str, loss: float) -> None:
        if status == TrialStatus.COMPLETE and math.isfinite(loss):
            self.study.tell(number, loss)
        else:
            # Diverged and failed runs have no loss to compare; FAIL keeps them out of
            # best_trial while the grid still counts them as visited.
            self.study.tell(number, state=TrialState.FAIL)

    def _spec_of(self, params: dict) -> TrialSpec | None:
        try:
            key = _grid_key(params["cell"], params["lr"], params["batch_size"], params["seed"])
        except KeyError:
            return None
        return self.specs_by_key.get(key)
