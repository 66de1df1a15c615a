"""The pieces of watching a sweep, one at a time: the ETA, plain progress lines, the
trainer's progress reports, the driver's read of them (never waiting), one journal write per
told trial, the status words, reading old float timestamps, and the refusals of `dashboard`
and `--log-to`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from sweeper.cli import main
from sweeper.cli.progress import SweepProgress, eta_seconds
from sweeper.cli.running import _live_words
from sweeper.outcome import CurvePoint, TrialOutcome
from sweeper.plan import plan_trials
from sweeper.recipe import parse_recipe
from sweeper.results import read_trials
from sweeper.results.schema import TRIALS_SCHEMA
from sweeper.schedule import SweepStudy
from tests.conftest import MINIMAL_RECIPE, RECIPES

SPECS = plan_trials(parse_recipe(MINIMAL_RECIPE), "data0")


def test_eta_extrapolates_the_measured_pace() -> None:
    assert eta_seconds(10.0, 10, 0, []) is None  # nothing has progressed yet
    # 2 done and 2 half-done = 3 trials' worth in 30 s: 7 left take 70 s.
    assert eta_seconds(30.0, 10, 2, [0.5, 0.5]) == pytest.approx(70.0)
    assert eta_seconds(30.0, 4, 4, []) == 0.0


def test_plain_lines_carry_counts_and_eta(capsys) -> None:
    view = SweepProgress(interactive=False)
    view.on_start(len(SPECS), len(SPECS), None)
    view.on_tick(
        [{"trial_id": s.trial_id, "label": s.label, "step": 5, "steps": 10} for s in SPECS], Counter()
    )
    outcome = TrialOutcome(SPECS[0].trial_id, "complete", 2.5, 2.5, 10, 640, 1.0, 0.0, 1.0)
    view.on_trial(SPECS[0], outcome, Counter(complete=1))
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"[1/{len(SPECS)}] complete")
    assert f"1 done, {len(SPECS) - 1} running, 0 pending" in line and "ETA" in line


def test_a_trial_reports_its_progress_while_it_trains(monkeypatch) -> None:
    from sweeper.train import monitor, run_trial
    from tests.train.conftest import build_specs

    monkeypatch.setattr(monitor, "REPORT_EVERY_SECONDS", 0.0)
    spec = build_specs(
        d_model=16,
        n_layers=1,
        n_heads=2,
        seq_len=16,
        batch_size=4,
        steps=12,
        evaluation={"every_steps": 4, "val_batches": 2},
    )[0]
    heard: list[tuple[str, dict]] = []
    outcome = run_trial(spec, report=lambda trial_id, point: heard.append((trial_id, point)))
    assert outcome.status == "complete"
    assert {trial_id for trial_id, _ in heard} == {spec.trial_id}
    steps = [point["step"] for _, point in heard]
    assert (
        steps == sorted(steps) and steps[-1] == spec.steps and all(p["steps"] == spec.steps for _, p in heard)
    )
    assert heard[-1][1]["val_loss"] == pytest.approx(outcome.curve[7].val_loss)  # measured at step 8


def test_the_driver_reads_live_progress_without_waiting(monkeypatch) -> None:
    """The board's answer is taken when it has arrived, a round later; until then (or when
    the board is lost) the read returns the last answer at once, and ray.get is never asked
    for an answer not yet there."""
    from sweeper.execute import live

    class Board:  # stands in for the actor: its read answers with the board's points now
        def __init__(self) -> None:
            self.points = {"a": {"step": 1}}
            self.sent: list[list[str]] = []
            self.answers: list[dict] = []
            self.read = self

        def remote(self, trial_ids: list[str]) -> int:  # the "object ref": an answer's index
            self.sent.append(trial_ids)
            self.answers.append({t: self.points[t] for t in trial_ids if t in self.points})
            return len(self.answers) - 1

    arrived: set[int] = set()
    monkeypatch.setattr(live.ray, "wait", lambda refs, timeout: ([r for r in refs if r in arrived], []))

    def get(ref: int) -> dict:
        assert ref in arrived, "the driver waited on an answer not yet there"
        return board.answers[ref]

    monkeypatch.setattr(live.ray, "get", get)
    progress = live.LiveProgress()
    board = progress._board = Board()
    assert progress.read(["a"]) == {}  # sent; nothing has arrived yet
    assert progress.read(["a"]) == {} and len(board.sent) == 1  # still out: not sent again
    arrived.add(0)
    assert progress.read(["a", "b"]) == {"a": {"step": 1}} and board.sent[-1] == ["a", "b"]
    assert progress.read(["b"]) == {}  # a finished trial's point is not shown


def test_a_told_trial_is_one_journal_write(tmp_path: Path) -> None:
    from sweeper.schedule.study import STUDY_FILE

    study = SweepStudy.open("s", SPECS, tmp_path)
    asked = study.next_trial({s.trial_id for s in SPECS})
    before = (tmp_path / STUDY_FILE).read_bytes().count(b"\n")
    curve = [
        CurvePoint(step, step * 64, 1e-3, 3.0, 3.0 - step / 10 if step % 2 == 0 else None)
        for step in (1, 2, 3, 4)
    ]
    study.tell(
        asked, TrialOutcome(asked.spec.trial_id, "complete", 2.6, 2.7, 4, 256, 1.0, 0.0, 1.0, curve=curve)
    )
    assert study.flush() == 1
    # The whole trial (params, curve, attributes, value) is one journal record: one append.
    assert (tmp_path / STUDY_FILE).read_bytes().count(b"\n") == before + 1
    trial = SweepStudy.open("s", SPECS, tmp_path).study.get_trials()[0]  # as a new reader sees it
    assert trial.intermediate_values == {128: pytest.approx(2.8), 256: pytest.approx(2.6)}
    assert trial.user_attrs["n_params"] == asked.spec.shape.n_params_nonembedding
    assert trial.user_attrs["batch_size_tokens"] == asked.spec.batch_size_tokens
    assert trial.value == pytest.approx(2.6)


def test_status_words_of_a_running_trial() -> None:
    words = _live_words({"step": 40, "steps": 62, "train_loss": 3.4123, "val_loss": None, "elapsed_s": 4.2})
    assert words == "; step 40/62, loss 3.412, 0:04 elapsed"
    assert _live_words({"label": "waiting"}) == ""


def test_float_timestamps_of_older_parts_are_read_as_timestamps(tmp_path: Path) -> None:
    row = {name: None for name in TRIALS_SCHEMA.names}
    row.update(
        trial_id="old", status="complete", loss=2.0, started_at=1_700_000_000.25, ended_at=1_700_000_010.5
    )
    legacy = pa.schema(
        [pa.field(f.name, pa.float64()) if f.name in ("started_at", "ended_at") else f for f in TRIALS_SCHEMA]
    )
    (tmp_path / "trials").mkdir()
    pq.write_table(pa.Table.from_pylist([row], schema=legacy), tmp_path / "trials" / "old.parquet")
    read = read_trials(tmp_path)
    assert not read.problems
    started = read.table.column("started_at")[0].as_py()
    assert (
        started.timestamp() == 1_700_000_000.25
        and str(read.table.schema.field("ended_at").type) == "timestamp[us, tz=UTC]"
    )


def test_dashboard_names_no_other_cluster(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["dashboard"])
    assert result.exit_code == 1 and "no sweep is running under ./runs" in result.output
    assert "http" not in result.output


def test_unknown_tracker_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main, ["submit", str(RECIPES / "smoke.yaml"), "--out", str(out), "--log-to", "neptune"]
    )
    assert result.exit_code == 2 and "expected wandb[:PROJECT] or mlflow:TRACKING_URI" in result.output
    assert not out.exists()
