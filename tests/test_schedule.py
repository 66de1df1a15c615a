"""Schedule: the Optuna study (real journal storage on disk) proposes every planned trial
exactly once, in fused groups when asked, and survives a driver that died mid-sweep."""

from __future__ import annotations

from pathlib import Path

from optuna.trial import TrialState

from sweeper.outcome import TrialOutcome
from sweeper.plan import plan_trials
from sweeper.recipe import parse_recipe
from sweeper.schedule import STUDY_FILE, SweepStudy
from sweeper.trainspec import fusion_key
from tests.conftest import MINIMAL_RECIPE

RECIPE = parse_recipe({
    **MINIMAL_RECIPE,
    "models": [{"d_model": 16, "n_layers": 1, "n_heads": 2}, {"d_model": 32, "n_layers": 1, "n_heads": 2}],
    "learning_rates": {"values": [1e-3, 3e-3, 1e-2, 3e-2]},
    "batch_sizes": [4, 8],
})
SPECS = plan_trials(RECIPE, "data0")


def _outcome(trial_id: str, loss: float = 3.0) -> TrialOutcome:
    return TrialOutcome(trial_id, "complete", loss, loss, 1, 1, 1.0, 0.0, 1.0)


def test_every_trial_is_asked_once(tmp_path: Path) -> None:
    study = SweepStudy.open("s", SPECS, tmp_path)
    runnable = {s.trial_id for s in SPECS}
    seen = []
    while (asked := study.next_trial(runnable)) is not None:
        seen.append(asked.spec.trial_id)
        runnable.discard(asked.spec.trial_id)
        study.tell(asked, _outcome(asked.spec.trial_id))
    assert sorted(seen) == sorted(s.trial_id for s in SPECS)
    trials = study.study.get_trials()
    assert len(trials) == len(SPECS) and all(t.state == TrialState.COMPLETE for t in trials)
    assert (tmp_path / STUDY_FILE).stat().st_size > 0


def test_groups_hold_fusable_trials_and_optuna_sees_each(tmp_path: Path) -> None:
    study = SweepStudy.open("s", SPECS, tmp_path)
    runnable = {s.trial_id for s in SPECS}
    groups = []
    while group := study.next_group(runnable, lambda spec: 3, fusion_key):
        groups.append(group)
        for asked in group:
            runnable.discard(asked.spec.trial_id)
    assert all(1 <= len(g) <= 3 for g in groups)
    for group in groups:
        assert len({fusion_key(a.spec) for a in group}) == 1
        assert len({a.spec.lr for a in group}) == len(group)
    asked_ids = [a.spec.trial_id for g in groups for a in g]
    assert sorted(asked_ids) == sorted(s.trial_id for s in SPECS)
    assert len(study.study.get_trials()) == len(SPECS)  # one Optuna trial per configuration


def test_a_dead_drivers_trials_are_closed_and_asked_again(tmp_path: Path) -> None:
    first = SweepStudy.open("s", SPECS, tmp_path)
    runnable = {s.trial_id for s in SPECS}
    finished, abandoned = [], []
    for index in range(6):
        asked = first.next_trial(runnable)
        runnable.discard(asked.spec.trial_id)
        if index < 3:
            first.tell(asked, _outcome(asked.spec.trial_id))
            finished.append(asked.spec.trial_id)
        else:
            abandoned.append(asked.spec.trial_id)  # in flight when the driver died
    # One of the in-flight trials had been recorded in Parquet before the crash.
    recorded = {trial_id: ("complete", 2.5) for trial_id in finished + abandoned[:1]}

    second = SweepStudy.open("s", SPECS, tmp_path)  # the same journal file, a new driver
    assert second.reconcile(recorded) == 3
    assert not second.study.get_trials(states=(TrialState.RUNNING,))
    runnable = {s.trial_id for s in SPECS} - set(recorded)
    seen = []
    while (asked := second.next_trial(runnable)) is not None:
        seen.append(asked.spec.trial_id)
        runnable.discard(asked.spec.trial_id)
        second.tell(asked, _outcome(asked.spec.trial_id))
    assert sorted(seen) == sorted({s.trial_id for s in SPECS} - set(recorded))
    assert set(abandoned[1:]) <= set(seen)
