"""The law-guided search as the driver sees it (``AdaptiveStudy``): the budget of the sweep and
of each cell holds, and a driver that dies mid-sweep, with trials running and tells unsent, is
continued from its study, or from the Parquet record alone when the study is lost, to the same
trials an uninterrupted driver ends with. A real journal on disk; the trainer is a landscape
whose optimum follows known power laws."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from optuna.trial import TrialState

from sweeper.outcome import TrialOutcome
from sweeper.plan import TrialSpec, plan_trials
from sweeper.recipe import Recipe, parse_recipe
from sweeper.schedule import STUDY_FILE, AdaptiveStudy
from sweeper.schedule.adaptive import ABANDONED, budget_runs
from sweeper.trainspec import fusion_key


def _recipe(**search: object) -> Recipe:
    return parse_recipe(
        {
            "name": "adaptive-unit",
            # 3 sizes x 2 budgets = 6 cells: the laws are fittable after 4 and place the rest.
            "models": [{"d_model": d, "n_layers": 1, "n_heads": 2, "seq_len": 16} for d in (16, 32, 64)],
            "tokens": {"absolute": [4096, 16384]},
            "learning_rates": {"values": [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2]},
            "batch_sizes": [2, 4, 8, 16],
            "search": {"kind": "adaptive", **search},
        }
    )


RECIPE = _recipe(budget=0.5, lookahead=1)
SPECS = plan_trials(RECIPE, "data0")


def loss_of(spec: TrialSpec) -> float:
    """lr* ~ N^-0.5 D^0.1, B* ~ D^0.5 (both inside the grid); steeper above the optimal lr."""
    n, d = spec.n_params, spec.tokens_budget
    lr_star = 8e-3 * (n / 12384) ** -0.5 * (d / 4096) ** 0.1
    b_star = 64 * (d / 4096) ** 0.5
    x, y = math.log(spec.lr / lr_star), math.log(spec.batch_size_tokens / b_star)
    return (2.0 + 50 * n**-0.25) * math.exp(0.02 * x * x * (3.0 if x > 0 else 1.0) + 0.01 * y * y)


def _outcome(spec: TrialSpec) -> TrialOutcome:
    loss = loss_of(spec)
    return TrialOutcome(spec.trial_id, "complete", loss, loss, 1, 1, 1.0, 0.0, 1.0)


def _drive(
    study: AdaptiveStudy, recorded: dict[str, tuple[str, float]], stop_after: int | None = None
) -> list[str]:
    """Ask every trial the search proposes, then record and tell them in reverse order (as a
    cluster returns them), until it is finished. With ``stop_after``: once that many trials
    were asked, die as a killed driver does: of the trials in flight, the first third are
    recorded and told, the next third recorded with their tells unsent, the rest running.
    Returns the trial ids asked, in order."""
    runnable = {spec.trial_id for spec in SPECS if spec.trial_id not in recorded}
    asked_ids: list[str] = []
    while not study.finished():
        in_flight = []
        while study.has_proposal():
            group = study.next_group(runnable, lambda spec: 1, fusion_key)
            if not group:
                break
            for asked in group:
                in_flight.append(asked)
                asked_ids.append(asked.spec.trial_id)
                runnable.discard(asked.spec.trial_id)
        assert in_flight, "nothing to ask and nothing running, yet not finished"
        if stop_after is not None and len(asked_ids) >= stop_after:
            third = max(1, len(in_flight) // 3)
            for index, asked in enumerate(in_flight[: 2 * third]):
                recorded[asked.spec.trial_id] = ("complete", loss_of(asked.spec))
                if index < third:
                    study.tell(asked, _outcome(asked.spec))
            study.flush()
            study._unsent.clear()  # the killed driver's queued tells die with it
            return asked_ids
        for asked in reversed(in_flight):
            recorded[asked.spec.trial_id] = ("complete", loss_of(asked.spec))
            study.tell(asked, _outcome(asked.spec))
        study.flush()
    return asked_ids


def _uninterrupted(tmp_path: Path) -> dict[str, tuple[str, float]]:
    recorded: dict[str, tuple[str, float]] = {}
    _drive(AdaptiveStudy.open(RECIPE.name, SPECS, tmp_path / "uninterrupted", search=RECIPE.search), recorded)
    return recorded


def test_budget_of_the_sweep_and_of_each_cell_holds(tmp_path: Path) -> None:
    # Budgets that bind: this landscape's search stops by itself at about 40% of the grid.
    for search, folder in (({"budget": 0.2}, "sweep"), ({"budget": 0.5, "max_runs_per_cell": 6}, "cell")):
        recipe = _recipe(**search)
        study = AdaptiveStudy.open(recipe.name, SPECS, tmp_path / folder, search=recipe.search)
        recorded: dict[str, tuple[str, float]] = {}
        asked = _drive(study, recorded)
        assert study.finished() and not study.has_proposal()
        assert len(asked) == len(set(asked)), "a trial was asked twice"
        assert 0 < len(asked) <= budget_runs(recipe.search.budget, len(SPECS))
        by_cell = Counter(next(s.cell_id for s in SPECS if s.trial_id == t) for t in asked)
        assert len(by_cell) >= 3  # the ladder is walked, not one cell exhausted
        if "max_runs_per_cell" in search:
            assert max(by_cell.values()) <= 6, by_cell
        # Optuna holds one finished trial per asked one, each with its trial id.
        trials = study.study.get_trials()
        assert sorted(t.user_attrs["trial_id"] for t in trials) == sorted(asked)
        assert all(t.state == TrialState.COMPLETE for t in trials)


def test_a_dead_drivers_study_is_continued_to_the_uninterrupted_trials(tmp_path: Path) -> None:
    reference = _uninterrupted(tmp_path)
    run_dir = tmp_path / "killed"
    recorded: dict[str, tuple[str, float]] = {}
    _drive(AdaptiveStudy.open(RECIPE.name, SPECS, run_dir, search=RECIPE.search), recorded, stop_after=12)
    assert 0 < len(recorded) < len(reference)

    resumed = AdaptiveStudy.open(RECIPE.name, SPECS, run_dir, search=RECIPE.search)
    running = [t for t in resumed.study.get_trials() if t.state == TrialState.RUNNING]
    assert running, "the dead driver left no trial running; the test would prove less"
    resumed.reconcile(recorded)
    # Running trials that were recorded are told; the others are abandoned and proposed again.
    abandoned = [t for t in resumed.study.get_trials() if t.user_attrs.get(ABANDONED)]
    assert all(t.user_attrs["trial_id"] not in recorded for t in abandoned)
    before = dict(recorded)
    asked_again = _drive(resumed, recorded)
    assert not set(asked_again) & set(before), "a recorded trial was asked again"
    assert set(recorded) == set(reference)


def test_a_lost_study_is_rebuilt_from_the_record_to_the_uninterrupted_trials(tmp_path: Path) -> None:
    reference = _uninterrupted(tmp_path)
    run_dir = tmp_path / "killed"
    recorded: dict[str, tuple[str, float]] = {}
    _drive(AdaptiveStudy.open(RECIPE.name, SPECS, run_dir, search=RECIPE.search), recorded, stop_after=12)
    (run_dir / STUDY_FILE).unlink()  # the study is lost; the Parquet record (``recorded``) is not

    rebuilt = AdaptiveStudy.open(RECIPE.name, SPECS, run_dir, search=RECIPE.search)
    assert rebuilt.reconcile(recorded) == len(recorded)
    before = dict(recorded)
    asked_again = _drive(rebuilt, recorded)
    assert not set(asked_again) & set(before), "a recorded trial was asked again"
    assert set(recorded) == set(reference)
