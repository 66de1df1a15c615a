"""Schedule: one Optuna study per sweep decides which planned trial runs next (ask/tell).

An exhaustive grid sampler walks the grid cell x lr x batch size x seed in random order, and
the study is persisted (an Optuna journal file in the run folder by default, or any Optuna
storage URL) so a restarted driver sees what was asked and told before. The study is the
*decider*, not the record: the Parquet results are the record of what finished. That is why
``next_trial`` is given the trials still to run, and re-points the sampler when the two
disagree (after a crash, a trial can be RUNNING in the study but lost in fact).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from sweeper.outcome import TrialOutcome, TrialStatus
from sweeper.plan import TrialSpec
from sweeper.recipe import Search
from sweeper.schedule.adaptive import ABANDONED, AdaptiveSettings, LawGuidedSampler, Predictor, SearchCell

STUDY_FILE = "optuna.journal"


def _grid_key(cell_id: str, lr: float, batch_size: int, seed: int) -> tuple:
    return (cell_id, float(lr), int(batch_size), int(seed))


def _spec_key(spec: TrialSpec) -> tuple:
    return _grid_key(spec.cell_id, spec.lr, spec.batch_size, spec.seed)


def storage_for(run_dir: Path, storage_url: str | None) -> optuna.storages.BaseStorage | str:
    """The study's storage: the URL given, else a journal file in the run folder.

    A journal file rather than SQLite because several processes may append to it (SQLite
    locks up under concurrent writers, and Optuna's docs advise against it on NFS).
    """
    if storage_url:
        return storage_url
    run_dir.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(run_dir / STUDY_FILE)))


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

    def __init__(self, study: optuna.Study, specs: list[TrialSpec]):
        self.study = study
        self.specs_by_key = {_spec_key(spec): spec for spec in specs}
        self.recorded: dict[str, tuple[str, float]] = {}
        sampler = study.sampler
        self.adaptive = sampler if isinstance(sampler, LawGuidedSampler) else None
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
        search: Search | None = None,
        predictor: Predictor | None = None,
        grid_runs: int | None = None,
        cell_sizes: dict[str, float] | None = None,
    ) -> SweepStudy:
        # Optuna logs every tell (INFO) and every FAIL (WARNING); the driver prints its own
        # progress, and closing re-proposed or abandoned points as FAIL is expected here (see
        # next_trial). Set when a driver opens its study, not at import, so that importing
        # sweeper leaves the user's Optuna logging alone.
        optuna.logging.set_verbosity(logging.ERROR)
        sampler: optuna.samplers.BaseSampler
        if search is not None and search.kind == "adaptive":
            sampler = law_guided_sampler(specs, search, predictor, sampler_seed, grid_runs, cell_sizes)
        else:
            with warnings.catch_warnings():
                # BruteForceSampler is marked experimental; its contract is all this loop uses.
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                sampler = AskTellGridSampler(seed=sampler_seed)
        study = optuna.create_study(
            study_name=name,
            storage=storage_for(Path(run_dir), storage_url),
            sampler=sampler,
            direction="minimize",
            load_if_exists=True,
        )
        return cls(study, specs)

    def reconcile(self, recorded: dict[str, tuple[str, float]]) -> int:
        """Close trials a dead driver left RUNNING: told with the recorded result where the
        trial finished, else failed as abandoned (its spec is still pending, so it is re-run).
        Returns how many were closed."""
        self.recorded = recorded
        closed = 0
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            spec = self._spec_of(trial.params)
            if spec is not None and spec.trial_id in recorded:
                self._close(trial.number, *recorded[spec.trial_id])
            else:
                # Abandoned: a law-guided sampler proposes its point again.
                self.study._storage.set_trial_user_attr(trial._trial_id, ABANDONED, True)
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
        if self.adaptive is not None:
            return self._next_adaptive(runnable)
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
        # A law-guided sweep fuses only among what its sampler proposes now.
        candidates = self._proposed_specs() if self.adaptive is not None else self.specs_by_key.values()
        for spec in candidates:
            if len(group) >= limit:
                break
            if spec.trial_id in runnable and spec.trial_id != first.spec.trial_id and key(spec) == group_key:
                group.append(self._ask_fixed(spec))
        return group

    def has_proposal(self) -> bool:
        """Whether the sampler can choose a trial now (a grid always can)."""
        return self.adaptive is None or self.adaptive.has_proposal(self.study)

    def finished(self) -> bool:
        """A law-guided sweep ends when its sampler says so; a grid when its plan is run."""
        return self.adaptive is not None and self.adaptive.is_finished(self.study)

    def _next_adaptive(self, runnable: set[str]) -> Asked | None:
        # A proposal recorded by an earlier driver (whose study was lost) is told its
        # recorded result instead of being run again; the sampler then proposes anew.
        assert self.adaptive is not None
        while self.adaptive.has_proposal(self.study):
            trial = self.study.ask(self.distributions)
            spec = self._spec_of(trial.params)
            if spec is not None and spec.trial_id in runnable:
                trial.set_user_attr("trial_id", spec.trial_id)
                return Asked(trial, spec)
            if spec is not None and spec.trial_id in self.recorded:
                self._close(trial.number, *self.recorded[spec.trial_id])
            else:
                self.study.tell(trial.number, state=TrialState.FAIL)
        return None

    def _proposed_specs(self) -> list[TrialSpec]:
        assert self.adaptive is not None
        specs = []
        for cell_index, (i, j), seed in self.adaptive.proposals(self.study):
            cell = self.adaptive.cells[cell_index]
            spec = self.specs_by_key.get(_grid_key(cell.name, cell.lrs[i], cell.batch_sizes[j], seed))
            if spec is not None:
                specs.append(spec)
        return specs

    def _ask_fixed(self, spec: TrialSpec) -> Asked:
        self.study.enqueue_trial(
            {"cell": spec.cell_id, "lr": spec.lr, "batch_size": spec.batch_size, "seed": spec.seed}
        )
        trial = self.study.ask(self.distributions)
        trial.set_user_attr("trial_id", spec.trial_id)
        return Asked(trial, spec)

    def tell(self, asked: Asked, outcome: TrialOutcome) -> None:
        asked.trial.set_user_attr("status", outcome.status)
        self._close(asked.trial.number, outcome.status, outcome.final_val_loss)

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


def law_guided_sampler(specs: list[TrialSpec], search: Search, predictor: Predictor | None = None,
                       seed: int = 0, grid_runs: int | None = None,
                       cell_sizes: dict[str, float] | None = None) -> LawGuidedSampler:
    """The recipe's adaptive search over the cells and grid values of ``specs``. ``cell_sizes``:
    the law's N per cell where it is not the shape's (a replayed table's, e.g. MoE active N)."""
    cell_sizes = cell_sizes or {}
    by_cell: dict[str, list[TrialSpec]] = {}
    for spec in specs:
        by_cell.setdefault(spec.cell_id, []).append(spec)
    cells = [
        SearchCell(
            name=cell_id,
            n_params=float(cell_sizes.get(cell_id, members[0].n_params)),
            tokens=float(members[0].tokens_budget),
            lrs=tuple(sorted({s.lr for s in members})),
            batch_sizes=tuple(sorted({s.batch_size for s in members})),
            seq_len=members[0].shape.seq_len,
        )
        for cell_id, members in by_cell.items()
    ]
    settings = AdaptiveSettings(budget=search.budget, max_runs_per_cell=search.max_runs_per_cell,
                                window=search.window, lookahead=search.lookahead,
                                estimator=search.estimator)
    return LawGuidedSampler(cells, settings, seeds=sorted({s.seed for s in specs}), predictor=predictor,
                            fit_seed=seed, grid_runs=grid_runs)
