"""Results: the sink writes complete files atomically; the reader survives damaged parts."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sweeper.outcome import CurvePoint, TrialOutcome
from sweeper.plan import plan_trials
from sweeper.recipe import parse_recipe
from sweeper.results import ResultSink, read_curves, read_trials
from sweeper.results.schema import TRIALS_SCHEMA
from tests.conftest import MINIMAL_RECIPE


def _outcome(trial_id: str, loss: float = 3.0, steps: int = 4) -> TrialOutcome:
    return TrialOutcome(
        trial_id=trial_id, status="complete", final_val_loss=loss, smoothed_train_loss=loss + 0.1,
        steps_done=steps, tokens_done=steps * 64, wall_seconds=1.0, started_at=1.0, ended_at=2.0,
        curve=[CurvePoint(step=i + 1, tokens=(i + 1) * 64, lr=1e-3, train_loss=5.0 - i) for i in range(steps)],
    )


def _specs(count: int = 2):
    recipe = parse_recipe({**MINIMAL_RECIPE, "learning_rates": {"values": [1e-3 * (i + 1) for i in range(count)]}})
    return plan_trials(recipe, "data0")


def test_record_and_read_back(tmp_path: Path) -> None:
    sink = ResultSink(tmp_path)
    specs = _specs(3)
    for index, spec in enumerate(specs):
        sink.record(spec, _outcome(spec.trial_id, loss=3.0 + index))
    trials = read_trials(tmp_path).to_pandas()
    assert sorted(trials["trial_id"]) == sorted(s.trial_id for s in specs)
    assert sorted(trials["loss"]) == [3.0, 4.0, 5.0]
    assert (trials["batch_size_tokens"] == trials["batch_size"] * trials["seq_len"]).all()
    curves = read_curves(tmp_path).to_pandas()
    assert len(curves) == 3 * 4
    # pandas reads the folder directly too, as a user would.
    assert len(pd.read_parquet(tmp_path / "trials")) == 3


def test_recording_a_trial_twice_keeps_one_row_and_one_curve(tmp_path: Path) -> None:
    sink = ResultSink(tmp_path)
    (spec,) = _specs(1)
    sink.record(spec, _outcome(spec.trial_id, loss=3.0))
    sink.record(spec, _outcome(spec.trial_id, loss=3.0))
    assert read_trials(tmp_path).table.num_rows == 1
    assert read_curves(tmp_path).table.num_rows == 4


def test_truncated_part_is_reported_and_skipped(tmp_path: Path) -> None:
    sink = ResultSink(tmp_path)
    specs = _specs(3)
    for spec in specs:
        sink.record(spec, _outcome(spec.trial_id))
    victim = tmp_path / "trials" / f"{specs[1].trial_id}.parquet"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    result = read_trials(tmp_path)
    assert result.table.num_rows == 2
    assert len(result.problems) == 1 and str(victim) in result.problems[0]


def _write_many(folder: str, count: int) -> None:
    recipe = parse_recipe({**MINIMAL_RECIPE, "learning_rates": {"values": [1e-4 * (i + 1) for i in range(count)]}})
    sink = ResultSink(Path(folder))
    for spec in plan_trials(recipe, "data0"):
        sink.record(spec, _outcome(spec.trial_id, steps=200))


def test_reader_never_sees_a_partial_file_while_a_writer_runs(tmp_path: Path) -> None:
    writer = multiprocessing.get_context("spawn").Process(target=_write_many, args=(str(tmp_path), 150))
    writer.start()
    reads = 0
    deadline = time.time() + 60
    try:
        while writer.is_alive() and time.time() < deadline:
            folder = tmp_path / "trials"
            if folder.is_dir():
                # Every visible file must be a complete Parquet file, at every moment.
                for name in os.listdir(folder):
                    if name.endswith(".parquet") and not name.startswith("."):
                        try:
                            table = pq.read_table(folder / name)
                        except FileNotFoundError:
                            continue
                        assert table.schema.equals(TRIALS_SCHEMA, check_metadata=False)
                        reads += 1
                assert read_trials(tmp_path).problems == []
    finally:
        writer.join(timeout=60)
    assert writer.exitcode == 0
    assert reads > 0
    assert read_trials(tmp_path).table.num_rows == 150
    assert not [n for n in os.listdir(tmp_path / "trials") if n.startswith(".")], "temporary files left behind"


def test_empty_run_folder_reads_as_empty_table(tmp_path: Path) -> None:
    result = read_trials(tmp_path)
    assert result.table.num_rows == 0 and result.table.schema.equals(TRIALS_SCHEMA)
    assert isinstance(result.table, pa.Table)
