"""Schedule: the Optuna study (real journal storage on disk) proposes every planned trial
exactly once, in fused groups when asked, and survives a driver that died mid-sweep."""

from __future__ import annotations

from pathlib import Path

from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from sweeper.outcome import TrialOutcome
from sweeper.plan import plan_trials
from sweeper.recipe import parse_recipe
from sweeper.schedule import STUDY_FILE, SweepStudy
from sweeper.trainspec import fusion_key
from tests.conftest import MINIMAL_RECIPE

RECIPE = parse_recipe(
    {
        **MINIMAL_RECIPE,
        "models": [
            {"d_model": 16, "n_layers": 1, "n_heads": 2},
            {"d_model": 32, "n_layers": 1, "n_heads": 2},
        ],
        "learning_rates": {"values": [1e-3, 3e-3, 1e-2, 3e-2]},
        "batch_sizes": [4, 8],
    }
)
SPECS = plan_trials(RECIPE, "data0")


def _outcome(trial_id: str, loss: float = 3.0) -> TrialOutcome:
    return TrialOutcome(trial_id, "complete", loss, loss, 1, 1, 1.0, 0.0, 1.0)


def _run_all(study: SweepStudy, runnable: set[str]) -> list[str]:
    seen = []
    while (asked := study.next_trial(runnable)) is not None:
        seen.append(asked.spec.trial_id)
        runnable.discard(asked.spec.trial_id)
        study.tell(asked, _outcome(asked.spec.trial_id))
    study.flush()
    return seen


def test_every_trial_is_asked_once_and_optuna_is_told_each(tmp_path: Path) -> None:
    study = SweepStudy.open("s", SPECS, tmp_path)
    seen = _run_all(study, {s.trial_id for s in SPECS})
    assert sorted(seen) == sorted(s.trial_id for s in SPECS)
    trials = study.study.get_trials()
    assert len(trials) == len(SPECS) and all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(t.user_attrs["trial_id"] for t in trials) == sorted(seen)
    assert (tmp_path / STUDY_FILE).stat().st_size > 0


def test_order_is_a_seeded_permutation(tmp_path: Path) -> None:
    def order(seed: int, folder: str) -> list[str]:
        return _run_all(
            SweepStudy.open("s", SPECS, tmp_path / folder, sampler_seed=seed), {s.trial_id for s in SPECS}
        )

    assert order(0, "a") == order(0, "b")
    assert order(0, "a") != order(1, "c")
    assert order(0, "a") != [s.trial_id for s in SPECS]  # not the plan's own order


def test_tells_wait_for_flush(tmp_path: Path) -> None:
    study = SweepStudy.open("s", SPECS, tmp_path)
    runnable = {s.trial_id for s in SPECS}
    for _ in range(3):
        asked = study.next_trial(runnable)
        runnable.discard(asked.spec.trial_id)
        study.tell(asked, _outcome(asked.spec.trial_id))
    assert study.study.get_trials() == [] and study.unsent == 3
    assert study.flush() == 3 and study.unsent == 0
    assert len(study.study.get_trials()) == 3


def test_a_flush_is_one_append_to_the_journal_and_reads_back_whole(tmp_path: Path, monkeypatch) -> None:
    appends: list[int] = []
    original = JournalFileBackend.append_logs

    def counting(self, logs):  # noqa: ANN001, ANN202
        appends.append(len(logs))
        return original(self, logs)

    monkeypatch.setattr(JournalFileBackend, "append_logs", counting)
    study = SweepStudy.open("s", SPECS, tmp_path)
    runnable = {s.trial_id for s in SPECS}
    losses = {}
    while (asked := study.next_trial(runnable)) is not None:
        runnable.discard(asked.spec.trial_id)
        losses[asked.spec.trial_id] = 3.0 + len(losses) / 10
        study.tell(asked, _outcome(asked.spec.trial_id, losses[asked.spec.trial_id]))
    appends.clear()
    assert study.flush() == len(SPECS)
    assert appends == [len(SPECS)]  # one append (one lock, one fsync) for the whole batch
    # A new driver reads every trial back from the file, numbered in the order told.
    again = SweepStudy.open("s", SPECS, tmp_path).study.get_trials()
    assert [t.number for t in again] == list(range(len(SPECS)))
    assert {t.user_attrs["trial_id"]: t.value for t in again} == losses
    assert study.study.get_trials()[-1].value == again[-1].value  # the writer's own view too


def test_groups_hold_fusable_trials_and_optuna_sees_each(tmp_path: Path) -> None:
    study = SweepStudy.open("s", SPECS, tmp_path)
    runnable = {s.trial_id for s in SPECS}
    groups = []
    while group := study.next_group(runnable, lambda spec: 3, fusion_key):
        groups.append(group)
        for asked in group:
            runnable.discard(asked.spec.trial_id)
            study.tell(asked, _outcome(asked.spec.trial_id))
    study.flush()
    assert all(1 <= len(g) <= 3 for g in groups)
    for group in groups:
        assert len({fusion_key(a.spec) for a in group}) == 1
        assert len({a.spec.lr for a in group}) == len(group)
    # Groups are full while their key has trials left: 4 lrs per key -> a group of 3, then 1.
    sizes = sorted(len(g) for g in groups)
    assert sizes == [1] * (len(SPECS) // 4) + [3] * (len(SPECS) // 4)
    asked_ids = [a.spec.trial_id for g in groups for a in g]
    assert sorted(asked_ids) == sorted(s.trial_id for s in SPECS)
    assert len(study.study.get_trials()) == len(SPECS)  # one Optuna trial per configuration


def test_a_dead_drivers_study_is_completed_from_the_record(tmp_path: Path) -> None:
    first = SweepStudy.open("s", SPECS, tmp_path)
    runnable = {s.trial_id for s in SPECS}
    finished = []
    for index in range(6):
        asked = first.next_trial(runnable)
        runnable.discard(asked.spec.trial_id)
        first.tell(asked, _outcome(asked.spec.trial_id))
        finished.append(asked.spec.trial_id)
        if index == 1:
            first.flush()  # two told; the other four die unsent with the driver
    # A journal written trial by trial (ask/tell) can also hold a RUNNING trial.
    left_running = first.study.ask()
    # What the Parquet record holds: the six finished trials.
    recorded = {trial_id: ("complete", 2.5) for trial_id in finished}

    second = SweepStudy.open("s", SPECS, tmp_path)  # the same journal file, a new driver
    assert second.reconcile(recorded) == 4
    assert second.study.get_trials(states=(TrialState.RUNNING,)) == []
    assert second.study.trials[left_running.number].state == TrialState.FAIL
    told = [t.user_attrs["trial_id"] for t in second.study.get_trials(states=(TrialState.COMPLETE,))]
    assert sorted(told) == sorted(finished)  # each recorded trial once
    seen = _run_all(second, {s.trial_id for s in SPECS} - set(recorded))
    assert sorted(seen) == sorted({s.trial_id for s in SPECS} - set(recorded))
    assert len(second.study.get_trials(states=(TrialState.COMPLETE,))) == len(SPECS)
    assert second.reconcile(recorded) == 0  # nothing left to tell


def test_failed_and_diverged_trials_are_failed_in_optuna(tmp_path: Path) -> None:
    study = SweepStudy.open("s", SPECS[:3], tmp_path)
    runnable = {s.trial_id for s in SPECS[:3]}
    statuses = iter(["failed", "diverged", "complete"])
    while (asked := study.next_trial(runnable)) is not None:
        runnable.discard(asked.spec.trial_id)
        status = next(statuses)
        loss = float("nan") if status != "complete" else 3.0
        study.tell(asked, TrialOutcome(asked.spec.trial_id, status, loss, loss, 1, 1, 1.0, 0.0, 1.0))
    study.flush()
    states = sorted(t.state.name for t in study.study.get_trials())
    assert states == ["COMPLETE", "FAIL", "FAIL"]
    assert study.study.best_trial.value == 3.0


def test_wsd_budgets_of_one_run_are_asked_together_whole(tmp_path: Path) -> None:
    from sweeper.plan import whole_runs
    from sweeper.trainspec import budget_line_key

    recipe = parse_recipe(
        {
            **MINIMAL_RECIPE,
            "tokens": {"absolute": [4096, 8192, 16384]},
            "learning_rates": {"values": [1e-3, 3e-3, 1e-2]},
            "schedule": {"kind": "wsd", "warmup_steps": 2},
        }
    )
    specs = plan_trials(recipe, "data0")
    for fused in (1, 7):  # K = 1 ('off') is raised to a run's 3 budgets; K = 7 holds 2 runs
        study = SweepStudy.open(f"k{fused}", specs, tmp_path, line=budget_line_key)
        members = whole_runs(lambda spec, k=fused: k, specs)
        runnable = {s.trial_id for s in specs}
        sizes = []
        while group := study.next_group(runnable, members, fusion_key):
            lines = {budget_line_key(a.spec) for a in group}
            assert sorted(len([a for a in group if budget_line_key(a.spec) == line]) for line in lines) == [
                3
            ] * len(lines)
            sizes.append(len(group))
            runnable -= {a.spec.trial_id for a in group}
        assert sizes == ([3, 3, 3] if fused == 1 else [6, 3])
