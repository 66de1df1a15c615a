"""The law-guided sampler as a plain Optuna sampler: a bare ``optuna.create_study`` drives it
with ask/tell on a landscape whose optimum follows known power laws."""

from __future__ import annotations

import math

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from sweeper.schedule import AdaptiveSettings, LawGuidedSampler, SearchCell
from sweeper.schedule.adaptive import ABANDONED

LRS = tuple(float(f"{1e-4 * 2 ** (k / 2):.6g}") for k in range(12))  # 1e-4 .. 4.5e-3, x1.41
BATCHES = (1, 2, 4, 8, 16, 32)
SEQ_LEN = 128


def true_optimum(n: float, d: float) -> tuple[float, float]:
    """lr* = 2 N^-0.5 D^0.1, B* = 0.05 D^0.5 tokens (inside the grid for the cells below)."""
    return 2.0 * n**-0.5 * d**0.1, 0.05 * d**0.5


def loss_at(n: float, d: float, lr: float, batch_size: int) -> float:
    lr_star, b_star = true_optimum(n, d)
    x, y = math.log(lr / lr_star), math.log(batch_size * SEQ_LEN / b_star)
    # Steeper toward high lr, as real landscapes are.
    return (2.0 + 50 * n**-0.25) * math.exp(0.02 * x * x * (3.0 if x > 0 else 1.0) + 0.01 * y * y)


CELLS = [
    SearchCell(f"n{n:.0e}-d{d:.0e}", n, d, LRS, BATCHES, SEQ_LEN)
    for n in (1e6, 4e6, 1.6e7)
    for d in (1e8, 4e8, 1.6e9)
]
SPACE = {
    "cell": CategoricalDistribution([cell.name for cell in CELLS]),
    "lr": CategoricalDistribution(list(LRS)),
    "batch_size": CategoricalDistribution(list(BATCHES)),
}


def _cell(name: str) -> SearchCell:
    return next(cell for cell in CELLS if cell.name == name)


def _tell(study: optuna.Study, trial: optuna.Trial) -> None:
    cell = _cell(trial.params["cell"])
    study.tell(trial, loss_at(cell.n_params, cell.tokens, trial.params["lr"], trial.params["batch_size"]))


def _drive(sampler: LawGuidedSampler, batch: bool) -> optuna.Study:
    """Ask/tell until the sampler is finished; ``batch`` asks every proposal at once and tells
    them in reverse order (results arriving out of order, as on a cluster)."""
    study = optuna.create_study(sampler=sampler)
    while not sampler.is_finished(study):
        trials = []
        while sampler.has_proposal(study):
            trials.append(study.ask(SPACE))
            if not batch:
                break
        for trial in reversed(trials):
            _tell(study, trial)
    return study


def _points(study: optuna.Study) -> set[tuple]:
    return {(t.params["cell"], t.params["lr"], t.params["batch_size"]) for t in study.get_trials()}


def test_bare_study_finds_every_cells_grid_optimum_within_budget() -> None:
    sampler = LawGuidedSampler(CELLS, AdaptiveSettings(budget=0.3))
    study = _drive(sampler, batch=False)
    trials = study.get_trials()
    assert len(trials) <= sampler.total_budget
    assert len(_points(study)) == len(trials)  # never the same point twice
    for cell in CELLS:
        measured = [t for t in trials if t.params["cell"] == cell.name]
        best = min(measured, key=lambda t: t.value)
        grid_best = min(
            ((lr, b) for lr in LRS for b in BATCHES), key=lambda p: loss_at(cell.n_params, cell.tokens, *p)
        )
        assert (best.params["lr"], best.params["batch_size"]) == grid_best, cell.name


def test_proposals_do_not_depend_on_the_order_results_arrive() -> None:
    settings = AdaptiveSettings(budget=0.3, lookahead=1)
    one_at_a_time = _drive(LawGuidedSampler(CELLS, settings), batch=False)
    all_at_once = _drive(LawGuidedSampler(CELLS, settings), batch=True)
    assert _points(one_at_a_time) == _points(all_at_once)


def test_a_fresh_sampler_over_the_same_study_proposes_the_same_and_reruns_abandoned_points() -> None:
    sampler = LawGuidedSampler(CELLS, AdaptiveSettings(budget=0.3))
    study = optuna.create_study(sampler=sampler)
    for _ in range(8):
        _tell(study, study.ask(SPACE))
    running = study.ask(SPACE)
    lost_point = (running.params["cell"], running.params["lr"], running.params["batch_size"])
    # The driver died: its running trial is marked abandoned and closed as failed.
    running.set_user_attr(ABANDONED, True)
    study.tell(running, state=TrialState.FAIL)
    fresh = LawGuidedSampler(CELLS, AdaptiveSettings(budget=0.3))
    assert fresh.proposals(study) == sampler.proposals(study)
    cell_index, (i, j), _ = fresh.proposals(study)[0]
    proposed = (
        fresh.cells[cell_index].name,
        fresh.cells[cell_index].lrs[i],
        fresh.cells[cell_index].batch_sizes[j],
    )
    assert lost_point == proposed or lost_point in {
        (fresh.cells[c].name, fresh.cells[c].lrs[p[0]], fresh.cells[c].batch_sizes[p[1]])
        for c, p, _ in fresh.proposals(study)
    }


def test_a_diverged_run_is_measured_not_retried() -> None:
    sampler = LawGuidedSampler(CELLS, AdaptiveSettings(budget=0.3))
    study = optuna.create_study(sampler=sampler)
    first = study.ask(SPACE)
    study.tell(first, state=TrialState.FAIL)  # diverged: no loss, but the point was measured
    again = [
        (sampler.cells[c].name, sampler.cells[c].lrs[p[0]], sampler.cells[c].batch_sizes[p[1]])
        for c, p, _ in sampler.proposals(study)
    ]
    assert (first.params["cell"], first.params["lr"], first.params["batch_size"]) not in again
