"""A law-guided Optuna sampler: fit the laws on the cells already finished, then spend the
next cells' runs near the optimum the laws predict.

Step Law's dense table (about 100 runs per cell) showed that a 3x3 window centred on the
law's prediction keeps the held-out regret of the whole grid; most of a grid is spent far
from the optimum. This sampler earns that from its own earlier cells:

* Cells are visited up the ladder (ascending N*D). Until the finished cells determine the
  laws, a cell starts from a coarse grid (the first) or a 3x3 window at the best point of the
  nearest finished cell; these *bootstrap* cells run one after another.
* Once the laws are fittable, each new cell starts from a cross-shaped window at the laws'
  prediction (``sweeper.fit.guide.predict_optima``, the project's own fitter); its arms
  widen (up to twice the ``window`` setting) where the bootstrap interval is wide.
* After each stage of a cell finishes, the window moves toward any edge where the cell's
  best run sits (its four grid neighbours must be measured: the optimum is bracketed), then
  the neighbours of every near-optimal run (within 0.25% of the best) are measured
  (the near-optimal set is resolved), as the cell's budget allows.

Determinism (so that a resumed driver proposes what an uninterrupted one would): every
decision is a function of *finished* results only, taken at fixed points: a stage waits for
the stage before it, and cell k's prediction uses exactly the cells ranked below
``k - lookahead`` (all of them must be finished before cell k starts). So whatever order
results arrive in, the set of proposals is the same; ``lookahead`` is how many cells may
run ahead of the law they will be placed by (it keeps the cluster full).

Budget: ``budget`` x (grid points of all cells) runs in total. Bootstrap cells take what they
need, up to 1.5x a cell's fair share (at least 9 runs, or ``max_runs_per_cell``); the rest is
shared equally by the law-guided cells, each cell's share set when it starts from what the
finished cells below it left. When that share falls below MIN_GUIDED_RUNS, fewer cells get
windows of that size, spread evenly up the ladder, and the others get no runs: their
optimum is left to the laws. A share bounds a cell's window and refinement, not the
bracketing of its best run, which may go on to BRACKET_CEILING x the share: an unbracketed
cell hands the fit its window's edge.

The state is the study: the sampler keeps only caches, so a sampler built afresh over the
same study proposes the same next points. A trial marked with the user attribute
``abandoned`` (a dead driver's trial) is ignored, so its point is proposed again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Container, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from sweeper.outcome import TrialOutcome, TrialStatus
from sweeper.plan import TrialSpec
from sweeper.recipe import Search
from sweeper.schedule.study import add_trials, frozen_trial, open_study, trial_attrs, trial_params

Point = tuple[int, int]  # (lr index, batch index) into a cell's sorted grid
ABANDONED = "abandoned"  # user attribute of a trial whose result will never come
# Step Law's table: a 3x3 window (9 runs) at the law's prediction kept the full grid's regret.
MIN_GUIDED_RUNS = 9
# A cell may spend up to this many times its share to bracket its best run (then it stops:
# an optimum that runs further is off the grid, or the laws are far off, and the fit says so).
BRACKET_CEILING = 2
NEIGHBOURS = ((-1, 0), (1, 0), (0, -1), (0, 1))
CORNERS = ((-1, -1), (1, 1), (-1, 1), (1, -1))


@dataclass(frozen=True)
class SearchCell:
    """One (N, D) cell and the grid it may draw from. ``batch_sizes`` are in sequences of
    ``seq_len`` tokens (the laws use tokens)."""

    name: str
    n_params: float
    tokens: float
    lrs: tuple[float, ...]
    batch_sizes: tuple[int, ...]
    seq_len: int = 1

    @property
    def size(self) -> int:
        return len(self.lrs) * len(self.batch_sizes)


@dataclass(frozen=True)
class AdaptiveSettings:
    budget: float = 0.25  # share of all cells' grid points the sweep may run
    max_runs_per_cell: int | None = None
    window: int = 1  # arm of the initial window around the prediction, in grid steps
    lookahead: int = 2  # cells that may start before the law they are placed by is final
    near_optimal: float = 0.0025  # Step Law's near-optimal threshold (relative loss)
    estimator: str = "smooth"
    coarse_stride: int = 3  # the first cell's coarse grid: every this many grid values


@dataclass
class _CellState:
    results: dict[Point, float]  # mean loss over seeds of finished points (inf: no loss)
    asked: dict[Point, set[int]]  # seeds asked (running or finished) per point


Predictor = Callable[..., Any]


class LawGuidedSampler(optuna.samplers.BaseSampler):
    """Proposes (cell, lr, batch_size[, seed]) where the laws fitted so far say the optimum is.

    Parameters it answers: ``cell`` (a SearchCell name), ``lr`` and ``batch_size`` (values of
    that cell's grid), ``seed`` (one of ``seeds``; each point runs once per seed). Ask only
    while ``has_proposal(study)``; the sweep is over when ``is_finished(study)``.
    ``predictor`` defaults to ``sweeper.fit.guide.predict_optima``.
    """

    def __init__(
        self,
        cells: Sequence[SearchCell],
        settings: AdaptiveSettings = AdaptiveSettings(),
        seeds: Sequence[int] = (0,),
        predictor: Predictor | None = None,
        fit_seed: int = 0,
        grid_runs: int | None = None,
    ):
        if not cells:
            raise ValueError("LawGuidedSampler needs at least one cell")
        # Up the ladder: cheapest cells first; the name breaks ties so the order is total.
        self.cells = sorted(cells, key=lambda c: (c.n_params * c.tokens, c.n_params, c.name))
        self.by_name = {cell.name: index for index, cell in enumerate(self.cells)}
        self.settings = settings
        self.seeds = tuple(sorted(seeds))
        if predictor is None:
            # The fitter sits right of the schedule in the data flow; only this default
            # reaches over, lazily, and the driver may inject its own.
            from sweeper.fit.guide import predict_optima

            predictor = predict_optima
        self.predictor: Predictor = predictor
        self.fit_seed = fit_seed
        # ``grid_runs``: what the full sweep would run (default: every grid point x seed); a
        # recorded table that is not a full cross product of its values passes its row count.
        grid_runs = grid_runs or sum(c.size for c in self.cells) * len(self.seeds)
        self.total_budget = budget_runs(settings.budget, grid_runs)
        self._law_cache: dict[tuple[str, ...], list | None] = {}
        self._proposal_of_trial: dict[int, tuple[int, Point, int]] = {}
        self._proposals_cache: tuple[tuple, list[tuple[int, Point, int]]] | None = None

    # -- Optuna's sampler contract ---------------------------------------------------------
    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:  # noqa: ANN001
        return {}

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:  # noqa: ANN001
        return {}

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        # One joint choice per trial, handed out one parameter at a time.
        if trial.number not in self._proposal_of_trial:
            proposals = self.proposals(study)
            if not proposals:
                raise RuntimeError(
                    "LawGuidedSampler has nothing to propose until running trials "
                    "finish; ask only while has_proposal(study)"
                )
            self._proposal_of_trial[trial.number] = proposals[0]
        cell_index, (i, j), seed = self._proposal_of_trial[trial.number]
        cell = self.cells[cell_index]
        values = {"cell": cell.name, "lr": cell.lrs[i], "batch_size": cell.batch_sizes[j], "seed": seed}
        if param_name not in values:
            raise ValueError(f"LawGuidedSampler answers cell, lr, batch_size, seed; not {param_name!r}")
        return values[param_name]

    # -- what the driver asks ------------------------------------------------------------
    def has_proposal(self, study: optuna.Study) -> bool:
        return bool(self.proposals(study))

    def is_finished(self, study: optuna.Study) -> bool:
        """Nothing to propose and nothing running: no result can change that any more."""
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return not running and not self.proposals(study)

    def proposals(self, study: optuna.Study) -> list[tuple[int, Point, int]]:
        """(cell index, point, seed) that may run now, in the order they should."""
        trials = study.get_trials(deepcopy=False)
        # Proposals change only when a trial is added, gets its parameters or finishes.
        version = (
            id(study),
            len(trials),
            sum(t.state != TrialState.RUNNING for t in trials),
            sum(bool(t.params) for t in trials),
        )
        if self._proposals_cache is not None and self._proposals_cache[0] == version:
            return list(self._proposals_cache[1])
        proposals = self._propose(self._read(trials))
        self._proposals_cache = (version, proposals)
        return list(proposals)

    def _propose(self, states: list[_CellState]) -> list[tuple[int, Point, int]]:
        asked_total = sum(len(seeds) for state in states for seeds in state.asked.values())
        room = self.total_budget - asked_total
        if room <= 0:
            return []
        done: list[bool] = []
        bootstrap_end: int | None = None
        measured = set(range(len(self.cells)))
        caps: dict[int, int] = {}  # each law-guided cell's share, as planned when it started
        out: list[tuple[int, Point, int]] = []
        for k, cell in enumerate(self.cells):
            prior = k if bootstrap_end is None else max(bootstrap_end, k - self.settings.lookahead)
            if not all(done[:prior]):
                done.append(False)
                continue
            prediction = None if bootstrap_end is None else self._predict(states, prior, k)
            if bootstrap_end is None and self._predict(states, k, k) is not None:
                bootstrap_end = k  # the finished cells determine the laws from here on
                measured = self._guided_cells(k, sum(len(s.asked) for s in states[:k]))
                prediction = self._predict(states, k, k)
            if k not in measured:
                done.append(True)  # left to the laws: the budget cannot give it a window
                continue
            if prediction is None:
                first, cap = self._bootstrap_stage(states, k), self._bootstrap_cap(cell)
            else:
                first, cap = (
                    self._guided_stage(cell, prediction),
                    self._guided_cap(states, caps, measured, prior, k),
                )
                caps[k] = cap
            finished, wanted = self._walk(cell, states[k], first, cap)
            done.append(finished)
            out.extend(
                (k, point, seed)
                for point in wanted
                for seed in self.seeds
                if seed not in states[k].asked.get(point, set())
            )
            if bootstrap_end is None and not finished:
                break  # bootstrap cells run one after another
        return out[:room]

    # -- reading the study ---------------------------------------------------------------
    def _read(self, trials: list[FrozenTrial]) -> list[_CellState]:
        losses: list[dict[Point, dict[int, float]]] = [{} for _ in self.cells]
        asked: list[dict[Point, set[int]]] = [{} for _ in self.cells]
        for trial in trials:
            located = self._locate(trial.params)
            if located is None or trial.user_attrs.get(ABANDONED):
                continue
            k, point, seed = located
            if trial.state == TrialState.RUNNING:
                asked[k].setdefault(point, set()).add(seed)
                continue
            if trial.state == TrialState.WAITING:
                continue
            value = (
                trial.value if trial.state == TrialState.COMPLETE and trial.value is not None else math.inf
            )
            asked[k].setdefault(point, set()).add(seed)
            losses[k].setdefault(point, {})[seed] = value if math.isfinite(value) else math.inf
        states = []
        for k in range(len(self.cells)):
            results = {
                point: float(np.mean(list(by_seed.values())))
                for point, by_seed in losses[k].items()
                if len(by_seed) >= len(self.seeds)
            }
            states.append(_CellState(results, asked[k]))
        return states

    def _locate(self, params: dict) -> tuple[int, Point, int] | None:
        k = self.by_name.get(params.get("cell"))  # type: ignore[arg-type]
        if k is None or "lr" not in params or "batch_size" not in params:
            return None
        cell = self.cells[k]
        i, j = _index_of(cell.lrs, params["lr"]), _index_of(cell.batch_sizes, params["batch_size"])
        if i is None or j is None:
            return None
        return k, (i, j), int(params.get("seed", self.seeds[0]))

    # -- the laws ------------------------------------------------------------------------
    def _predict(self, states: list[_CellState], prior: int, k: int) -> Any:
        """The laws fitted on cells ranked below ``prior``, evaluated at cell k (or None)."""
        if prior < 1:
            return None
        key = tuple(cell.name for cell in self.cells[:prior])
        if key not in self._law_cache:
            rows = [row for c in range(prior) for row in self._rows(c, states[c])]
            targets = [(cell.n_params, cell.tokens) for cell in self.cells]
            self._law_cache[key] = self.predictor(
                rows, targets, estimator=self.settings.estimator, seed=self.fit_seed
            )
        predictions = self._law_cache[key]
        return None if predictions is None else predictions[k]

    def _rows(self, k: int, state: _CellState) -> list[dict]:
        cell = self.cells[k]
        return [
            {
                "cell_id": cell.name,
                "n_params": cell.n_params,
                "tokens_budget": cell.tokens,
                "seq_len": cell.seq_len,
                "lr": cell.lrs[i],
                "batch_size_tokens": cell.batch_sizes[j] * cell.seq_len,
                "loss": loss if math.isfinite(loss) else None,
                "status": "complete" if math.isfinite(loss) else "diverged",
            }
            for (i, j), loss in state.results.items()
        ]

    # -- a cell's stages -----------------------------------------------------------------
    def _walk(
        self, cell: SearchCell, state: _CellState, first: list[Point], cap: int
    ) -> tuple[bool, list[Point]]:
        """Replay the cell's stages on its finished results: (finished, points to run now).

        ``cap`` bounds the window and its refinement; bracketing the best run may go on past
        it, up to BRACKET_CEILING x ``cap`` (or ``max_runs_per_cell``). A cell cut off with its
        best run on the window's edge hands the fitter the edge, not the optimum, and the
        edge lies where the laws predicted: the error confirms itself. Measured on the Step
        Law MoE table, half the law-guided cells at budget 0.25 ended so, and it was their
        worst held-out cells."""
        ceiling = self.settings.max_runs_per_cell or BRACKET_CEILING * cap
        included: list[Point] = []
        stage = _unique(first)[:cap]
        while stage:
            included.extend(stage)
            waiting = [p for p in stage if p not in state.results]
            if waiting:
                return False, waiting
            bracketing, stage = self._next_stage(cell, state, included)
            stage = [p for p in stage if p not in included]
            stage = stage[: max(0, (ceiling if bracketing else cap) - len(included))]
        return True, []

    def _next_stage(
        self, cell: SearchCell, state: _CellState, included: list[Point]
    ) -> tuple[bool, list[Point]]:
        """(whether these points bracket the best run, the points)."""
        losses = [state.results[p] for p in included]
        best_loss = min(losses)
        if not math.isfinite(best_loss):
            return False, []  # every run diverged: there is no optimum to bracket
        best = included[losses.index(best_loss)]
        bracket = [q for q in _neighbours(cell, best) if q not in included]
        if bracket:
            return True, bracket
        # Bracketed: the best's corners (the fitter's quadratic needs the lr x B cross term,
        # which a cross of runs cannot measure), then the near-optimal runs' neighbours.
        near = [
            p for p, loss in zip(included, losses) if loss <= best_loss * (1 + self.settings.near_optimal)
        ]
        return False, _unique(
            [q for q in _neighbours(cell, best, CORNERS) if q not in included]
            + [q for p in near for q in _neighbours(cell, p) if q not in included]
        )

    def _bootstrap_stage(self, states: list[_CellState], k: int) -> list[Point]:
        cell = self.cells[k]
        finished = [c for c in range(k) if states[c].results]
        if not finished:
            stride = max(1, self.settings.coarse_stride)
            rows = range((len(cell.lrs) - 1) % stride // 2, len(cell.lrs), stride)
            cols = range((len(cell.batch_sizes) - 1) % stride // 2, len(cell.batch_sizes), stride)
            return [(i, j) for i in rows for j in cols]
        # The nearest finished cell's best point, in (log N, log D), as this cell's centre.
        here = np.log([cell.n_params, cell.tokens])
        nearest = min(
            finished,
            key=lambda c: (
                float(np.sum((np.log([self.cells[c].n_params, self.cells[c].tokens]) - here) ** 2)),
                c,
            ),
        )
        other, results = self.cells[nearest], states[nearest].results
        i, j = min(results, key=lambda p: (results[p], p))
        centre = (
            _nearest(cell.lrs, other.lrs[i]),
            _nearest(cell.batch_sizes, other.batch_sizes[j] * other.seq_len / cell.seq_len),
        )
        return _cross(cell, centre, self.settings.window, self.settings.window)

    def _guided_stage(self, cell: SearchCell, prediction: Any) -> list[Point]:
        centre = (
            _nearest(cell.lrs, math.exp(prediction.log_lr)),
            _nearest(cell.batch_sizes, math.exp(prediction.log_batch_tokens) / cell.seq_len),
        )
        w = self.settings.window
        reach = []
        for values, half in (
            (cell.lrs, prediction.log_lr_halfwidth),
            (cell.batch_sizes, prediction.log_batch_halfwidth),
        ):
            step = float(np.median(np.diff(np.log(values)))) if len(values) > 1 else 1.0
            # A wide interval widens the arm, up to twice the recipe's window.
            reach.append(w if not math.isfinite(half) else int(min(2 * w, max(w, round(half / step)))))
        return _cross(cell, centre, reach[0], reach[1])

    def _bootstrap_cap(self, cell: SearchCell) -> int:
        # 1.5x a cell's fair share, at least a 3x3 window's worth: these cells must locate
        # their optimum without a law.
        fair = self.total_budget // len(self.seeds) // len(self.cells)
        return self.settings.max_runs_per_cell or max(MIN_GUIDED_RUNS, 3 * fair // 2)

    def _guided_cells(self, bootstrap_end: int, used_by_bootstrap: int) -> set[int]:
        """Which cells get runs. The budget left after the bootstrap is shared equally by the
        law-guided cells; when a share falls below MIN_GUIDED_RUNS, fewer cells get windows of
        that size, spread evenly up the ladder (its largest cell included), and the others are
        left to the laws: a window too small to locate an optimum costs runs and misleads the
        fit."""
        guided = list(range(bootstrap_end, len(self.cells)))
        remaining = self.total_budget // len(self.seeds) - used_by_bootstrap
        if guided and remaining // len(guided) < MIN_GUIDED_RUNS:
            affordable = max(1, remaining // MIN_GUIDED_RUNS)
            if affordable < len(guided):
                picks = np.linspace(0, len(guided) - 1, affordable).round().astype(int)
                return set(range(bootstrap_end)) | {guided[p] for p in picks}
        return set(range(len(self.cells)))

    def _guided_cap(
        self, states: list[_CellState], caps: dict[int, int], measured: set[int], prior: int, k: int
    ) -> int:
        """Law-guided cell k's share: what the budget leaves, shared equally by it and the
        measured cells above it. Cells below ``prior`` are finished and count what they ran
        (a cell that stopped early leaves its runs to the next; one that went on to bracket
        its optimum takes them from the next); the cells still running below k count their
        own share, so the share is fixed when cell k starts, whatever arrives after."""
        spent = sum(len(states[c].asked) for c in range(prior))
        spent += sum(caps.get(c, 0) for c in range(prior, k))
        cells_left = sum(1 for c in measured if c >= k)
        share = (self.total_budget // len(self.seeds) - spent) // max(1, cells_left)
        cap = max(5, share)  # fewer than 5 runs cannot locate an optimum in two dimensions
        if self.settings.max_runs_per_cell:
            cap = min(cap, self.settings.max_runs_per_cell)
        return cap


def budget_runs(fraction: float, grid_runs: int) -> int:
    """Trials a law-guided sweep may run: ``fraction`` of the full grid's, at least one."""
    return max(1, math.floor(fraction * grid_runs))


def _index_of(values: tuple, value: Any) -> int | None:
    for index, candidate in enumerate(values):
        if candidate == value or abs(float(candidate) - float(value)) <= 1e-9 * abs(float(candidate)):
            return index
    return None


def _nearest(values: tuple, value: float) -> int:
    logs = np.log(np.asarray(values, dtype=float))
    return int(np.argmin(np.abs(logs - math.log(value))))


def _cross(cell: SearchCell, centre: Point, reach_lr: int, reach_b: int) -> list[Point]:
    """The centre and ``reach`` points each way along both axes, nearest first (a budget that
    cuts the window cuts its far ends); an arm cut by the grid's edge continues on the other
    side, so the window keeps its size."""
    arms: list[tuple[int, int, Point]] = []
    for axis, reach, size in ((0, reach_lr, len(cell.lrs)), (1, reach_b, len(cell.batch_sizes))):
        offsets = sorted(
            (o for o in range(-2 * reach, 2 * reach + 1) if o and 0 <= centre[axis] + o < size),
            key=lambda o: (abs(o), o),
        )[: 2 * reach]
        for offset in offsets:
            point = list(centre)
            point[axis] += offset
            arms.append((abs(offset), axis, (point[0], point[1])))
    return [centre] + [point for _, _, point in sorted(arms, key=lambda arm: (arm[0], arm[1]))]


def _neighbours(cell: SearchCell, point: Point, steps: tuple[Point, ...] = NEIGHBOURS) -> list[Point]:
    out = []
    for di, dj in steps:
        i, j = point[0] + di, point[1] + dj
        if 0 <= i < len(cell.lrs) and 0 <= j < len(cell.batch_sizes):
            out.append((i, j))
    return out


def _unique(points: list[Point]) -> list[Point]:
    return list(dict.fromkeys(points))


# -- the driver's schedule for a law-guided sweep ----------------------------------------------


@dataclass
class AskedTrial:
    """A trial the law-guided sampler chose: the Optuna trial (RUNNING until told) and its spec."""

    trial: optuna.Trial
    spec: TrialSpec


class AdaptiveStudy:
    """The schedule of a law-guided sweep (``search: {kind: adaptive}``): Optuna's ask/tell
    with ``LawGuidedSampler``, where the grid's ``study.SweepStudy`` walks its plan without
    asking. Each choice is an ``ask`` (a RUNNING trial, so the sampler knows what runs); each
    result is queued by ``tell`` and told by ``flush``, once the results are on disk. The
    sampler proposes from told results only, so the driver flushes when it has nothing to
    propose (``has_proposal``), and stops when ``finished``, however many planned trials
    remain pending."""

    def __init__(self, study: optuna.Study, specs: list[TrialSpec], repairs: list[str] | None = None):
        if not isinstance(study.sampler, LawGuidedSampler):
            raise TypeError("AdaptiveStudy needs a study whose sampler is a LawGuidedSampler")
        self.study = study
        self.sampler: LawGuidedSampler = study.sampler
        self.repairs = repairs or []
        self.specs_by_id = {spec.trial_id: spec for spec in specs}
        self.specs_by_key = {
            _grid_key(spec.cell_id, spec.lr, spec.batch_size, spec.seed): spec for spec in specs
        }
        # Lists of choices, not ranges: the sampler answers grid values, and a law-guided
        # sweep's trials are few.
        self.distributions: dict[str, BaseDistribution] = {
            "cell": CategoricalDistribution(sorted({s.cell_id for s in specs})),
            "lr": CategoricalDistribution(sorted({s.lr for s in specs})),
            "batch_size": CategoricalDistribution(sorted({s.batch_size for s in specs})),
            "seed": CategoricalDistribution(sorted({s.seed for s in specs})),
        }
        self._unsent: list[tuple[AskedTrial, TrialOutcome]] = []

    @classmethod
    def open(
        cls,
        name: str,
        specs: list[TrialSpec],
        run_dir: Path,
        storage_url: str | None = None,
        *,
        search: Search,
        predictor: Predictor | None = None,
        sampler_seed: int = 0,
        grid_runs: int | None = None,
        cell_sizes: dict[str, float] | None = None,
    ) -> AdaptiveStudy:
        sampler = law_guided_sampler(specs, search, predictor, sampler_seed, grid_runs, cell_sizes)
        study, repairs = open_study(name, Path(run_dir), storage_url, sampler=sampler)
        return cls(study, specs, repairs)

    def reconcile(self, recorded: dict[str, tuple[str, float]]) -> int:
        """Bring the study in line with the results when a sweep (re)starts. A trial a dead
        driver left RUNNING is told its recorded result where it finished, else marked
        abandoned and failed (the sampler proposes its point again); every recorded trial
        the study lacks (its study lost, or tells never sent) is told, so the sampler sees
        what the last driver saw. Returns how many trials were told."""
        known: set[str] = set()
        told = 0
        for trial in self.study.get_trials(deepcopy=False):
            trial_id = trial.user_attrs.get("trial_id")
            if trial.state == TrialState.RUNNING:
                if trial_id in recorded and trial_id in self.specs_by_id:
                    status, loss = recorded[trial_id]
                    self._tell_storage(trial.number, status, loss)
                    known.add(trial_id)
                    told += 1
                else:
                    self.study._storage.set_trial_user_attr(trial._trial_id, ABANDONED, True)
                    self.study.tell(trial.number, state=TrialState.FAIL)
            elif trial_id is not None and not trial.user_attrs.get(ABANDONED):
                known.add(trial_id)
        missing = [
            trial_id for trial_id in recorded if trial_id not in known and trial_id in self.specs_by_id
        ]
        if missing:
            add_trials(
                self.study,
                [frozen_trial(self.specs_by_id[t], self.distributions, *recorded[t]) for t in missing],
            )
        return told + len(missing)

    def has_proposal(self) -> bool:
        """Whether the sampler can choose a trial now (else it waits for results)."""
        return self.sampler.has_proposal(self.study)

    def finished(self) -> bool:
        """Nothing left to propose and nothing running or waiting to be told."""
        return not self._unsent and self.sampler.is_finished(self.study)

    def next_group(
        self,
        runnable: Container[str],
        max_members: Callable[[TrialSpec], int],
        key: Callable[[TrialSpec], Hashable],
    ) -> list[AskedTrial]:
        """The sampler's next proposal that is runnable, plus up to ``max_members(it) - 1``
        other current proposals with the same ``key`` (trials that can train fused)."""
        first = self._next(runnable)
        if first is None:
            return []
        group = [first]
        limit = max_members(first.spec)
        group_key = key(first.spec)
        for spec in self._proposed_specs():  # fused only among what the sampler proposes now
            if len(group) >= limit:
                break
            if spec.trial_id in runnable and spec.trial_id != first.spec.trial_id and key(spec) == group_key:
                group.append(self._ask_fixed(spec))
        return group

    def _next(self, runnable: Container[str]) -> AskedTrial | None:
        while self.sampler.has_proposal(self.study):
            trial = self.study.ask(self.distributions)
            spec = self._spec_of(trial.params)
            if spec is not None and spec.trial_id in runnable:
                trial.set_user_attr("trial_id", spec.trial_id)
                return AskedTrial(trial, spec)
            # A proposal the driver cannot run (not planned, or recorded as failed): closed
            # as measured, so the sampler moves on.
            self.study.tell(trial.number, state=TrialState.FAIL)
        return None

    def _proposed_specs(self) -> list[TrialSpec]:
        specs = []
        for cell_index, (i, j), seed in self.sampler.proposals(self.study):
            cell = self.sampler.cells[cell_index]
            spec = self.specs_by_key.get(_grid_key(cell.name, cell.lrs[i], cell.batch_sizes[j], seed))
            if spec is not None:
                specs.append(spec)
        return specs

    def _ask_fixed(self, spec: TrialSpec) -> AskedTrial:
        self.study.enqueue_trial(trial_params(spec))
        trial = self.study.ask(self.distributions)
        trial.set_user_attr("trial_id", spec.trial_id)
        return AskedTrial(trial, spec)

    def _spec_of(self, params: dict) -> TrialSpec | None:
        try:
            key = _grid_key(params["cell"], params["lr"], params["batch_size"], params.get("seed", 0))
        except KeyError:
            return None
        return self.specs_by_key.get(key)

    def tell(self, asked: AskedTrial, outcome: TrialOutcome) -> None:
        """Queue the outcome; ``flush`` tells Optuna (after the results are on disk)."""
        self._unsent.append((asked, outcome))

    @property
    def unsent(self) -> int:
        return len(self._unsent)

    def flush(self) -> int:
        """Tell Optuna every queued outcome, with the trial's attributes and validation curve
        (intermediate values, step = tokens trained); return how many."""
        sent, self._unsent = self._unsent, []
        storage = self.study._storage
        for asked, outcome in sent:
            trial_id = asked.trial._trial_id
            for name, value in trial_attrs(asked.spec, outcome.status).items():
                storage.set_trial_user_attr(trial_id, name, value)
            for point in outcome.curve:
                if point.val_loss is not None and math.isfinite(point.val_loss):
                    storage.set_trial_intermediate_value(trial_id, point.tokens, point.val_loss)
            self._tell_storage(asked.trial.number, outcome.status, outcome.final_val_loss)
        return len(sent)

    def _tell_storage(self, number: int, status: str, loss: float) -> None:
        if status == TrialStatus.COMPLETE and math.isfinite(loss):
            self.study.tell(number, loss)
        else:  # diverged or failed: measured, with no loss to compare
            self.study.tell(number, state=TrialState.FAIL)


def _grid_key(cell: str, lr: float, batch_size: int, seed: int) -> tuple:
    return (cell, float(lr), int(batch_size), int(seed))


def law_guided_sampler(
    specs: list[TrialSpec],
    search: Search,
    predictor: Predictor | None = None,
    seed: int = 0,
    grid_runs: int | None = None,
    cell_sizes: dict[str, float] | None = None,
) -> LawGuidedSampler:
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
    settings = AdaptiveSettings(
        budget=search.budget,
        max_runs_per_cell=search.max_runs_per_cell,
        window=search.window,
        lookahead=search.lookahead,
        estimator=search.estimator,
    )
    return LawGuidedSampler(
        cells,
        settings,
        seeds=sorted({s.seed for s in specs}),
        predictor=predictor,
        fit_seed=seed,
        grid_runs=grid_runs,
    )
