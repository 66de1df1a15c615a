"""Faults that leave damage behind (a torn journal line, a damaged curve file, a dead
driver's progress file) are repaired or reported, and leave a state `resume` completes."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from optuna.trial import TrialState

from sweeper.cli import main
from sweeper.outcome import CurvePoint, TrialOutcome
from sweeper.plan import plan_trials
from sweeper.recipe import parse_recipe
from sweeper.results import ResultSink
from sweeper.runfolder import PROGRESS_FILE
from sweeper.schedule.study import STUDY_FILE, SweepStudy
from sweeper.sweep import recorded_results
from tests.conftest import MINIMAL_RECIPE


def _specs(count: int = 3):
    recipe = parse_recipe(
        {**MINIMAL_RECIPE, "learning_rates": {"values": [1e-3 * (i + 1) for i in range(count)]}}
    )
    return plan_trials(recipe, "data0")


def _outcome(trial_id: str, loss: float = 3.0) -> TrialOutcome:
    return TrialOutcome(
        trial_id=trial_id,
        status="complete",
        final_val_loss=loss,
        smoothed_train_loss=loss,
        steps_done=2,
        tokens_done=128,
        wall_seconds=1.0,
        started_at=1.0,
        ended_at=2.0,
        curve=[CurvePoint(step=i + 1, tokens=(i + 1) * 64, lr=1e-3, train_loss=4.0 - i) for i in range(2)],
    )


def _run_one(study: SweepStudy, runnable: set[str], loss: float) -> str:
    asked = study.next_trial(runnable)
    assert asked is not None
    study.tell(asked, _outcome(asked.spec.trial_id, loss))
    study.flush()  # tells reach the journal when the driver flushes (after results are on disk)
    return asked.spec.trial_id


def test_a_torn_journal_line_is_cut_and_the_study_opens_again_and_again(tmp_path: Path) -> None:
    specs = _specs()
    runnable = {s.trial_id for s in specs}
    study = SweepStudy.open("tiny", specs, tmp_path)
    runnable.discard(_run_one(study, runnable, 3.0))
    journal = tmp_path / STUDY_FILE
    whole = journal.read_bytes()
    # What a kill or a full disk leaves: half of the next line.
    with open(journal, "ab") as stream:
        stream.write(b'{"op_code": 4, "worker_id": "abc", "trial_id": 1, "sta')

    reopened = SweepStudy.open("tiny", specs, tmp_path)
    assert len(reopened.repairs) == 1 and "torn last line" in reopened.repairs[0]
    assert journal.read_bytes().startswith(whole) and b'"worker_id": "abc"' not in journal.read_bytes()
    runnable.discard(_run_one(reopened, runnable, 2.5))  # appends after the cut, not onto it

    third = SweepStudy.open("tiny", specs, tmp_path)
    assert third.repairs == []
    complete = third.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert sorted(t.value for t in complete) == [2.5, 3.0]


def test_a_journal_broken_inside_is_set_aside_and_the_record_decides(tmp_path: Path) -> None:
    specs = _specs()
    study = SweepStudy.open("tiny", specs, tmp_path)
    _run_one(study, {s.trial_id for s in specs}, 3.0)
    journal = tmp_path / STUDY_FILE
    lines = journal.read_bytes().splitlines(keepends=True)
    # A torn line that a later append landed on (what older versions left behind).
    journal.write_bytes(b"".join(lines[:-1]) + b'{"op_code": 4, "wor' + lines[-1])

    reopened = SweepStudy.open("tiny", specs, tmp_path)
    assert len(reopened.repairs) == 1 and "moved to" in reopened.repairs[0]
    assert list(tmp_path.glob(f"{STUDY_FILE}.unreadable-*"))
    # A fresh study: every planned trial can still be asked.
    asked = reopened.next_trial({s.trial_id for s in specs})
    assert asked is not None


def test_a_damaged_curve_file_is_reported_and_its_trial_runs_again(tmp_path: Path) -> None:
    specs = _specs()
    sink = ResultSink(tmp_path)
    for spec in specs:  # one part per trial: the first written holds the first trial
        sink.record(spec, _outcome(spec.trial_id))
        sink.flush()
    victim = sorted((tmp_path / "curves").glob("*.parquet"))[0]
    victim.write_bytes(victim.read_bytes()[:40])

    finished, _, problems = recorded_results(tmp_path)
    assert set(finished) == {s.trial_id for s in specs[1:]}  # resume runs the first again
    assert any(str(victim) in problem for problem in problems)

    status = CliRunner().invoke(main, ["status", str(tmp_path), "--json"])
    assert status.exit_code == 0, status.output
    assert str(victim) in status.stderr
    assert any(str(victim) in problem for problem in json.loads(status.stdout)["problems"])


def test_status_lists_no_running_trials_for_a_dead_driver(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    host = subprocess.run(
        [sys.executable, "-c", "import socket; print(socket.gethostname())"], capture_output=True, text=True
    ).stdout.strip()
    progress = {
        "pid": int(dead.stdout),
        "host": host,
        "updated_at": 0,
        "finished": False,
        "planned": 3,
        "running": [{"trial_id": "a", "label": "cell lr=0.001 B=4"}],
    }
    (tmp_path / PROGRESS_FILE).write_text(json.dumps(progress))
    status = CliRunner().invoke(main, ["status", str(tmp_path), "--json"])
    assert status.exit_code == 0, status.output
    report = json.loads(status.stdout)
    assert "stopped before finishing" in report["driver"]
    assert report["running"] == [] and report["pending"] == 3


def test_status_counts_failed_trials_as_failed_not_pending(tmp_path: Path) -> None:
    specs = _specs()
    sink = ResultSink(tmp_path)
    sink.record(specs[0], _outcome(specs[0].trial_id))
    failed = dataclasses.replace(_outcome(specs[1].trial_id), status="failed", error="OSError: gone")
    sink.record(specs[1], failed)
    sink.flush()
    progress = {"pid": 1, "host": "elsewhere", "updated_at": 0, "finished": True, "planned": 3, "running": []}
    (tmp_path / PROGRESS_FILE).write_text(json.dumps(progress))

    report = json.loads(CliRunner().invoke(main, ["status", str(tmp_path), "--json"]).stdout)
    assert report["counts"]["complete"] == 1 and report["counts"]["failed"] == 1
    assert report["pending"] == 1  # the third, never run; not the failed one
    text = CliRunner().invoke(main, ["status", str(tmp_path)]).stdout
    assert "1 complete, 1 failed, 1 pending" in text and "runs them again" in text
