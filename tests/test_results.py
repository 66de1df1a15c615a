"""Results: the sink writes complete files atomically; the reader survives damaged parts."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sweeper.outcome import CurvePoint, TrialOutcome
from sweeper.plan import plan_trials
from sweeper.recipe import parse_recipe
from sweeper.results import ResultSink, compact_run, read_curves, read_trials
from sweeper.results.schema import TRIALS_SCHEMA
from tests.conftest import MINIMAL_RECIPE


def _outcome(trial_id: str, loss: float = 3.0, steps: int = 4) -> TrialOutcome:
    return TrialOutcome(
        trial_id=trial_id,
        status="complete",
        final_val_loss=loss,
        smoothed_train_loss=loss + 0.1,
        steps_done=steps,
        tokens_done=steps * 64,
        wall_seconds=1.0,
        started_at=1.0,
        ended_at=2.0,
        curve=[
            CurvePoint(step=i + 1, tokens=(i + 1) * 64, lr=1e-3, train_loss=5.0 - i) for i in range(steps)
        ],
    )


def _specs(count: int = 2):
    recipe = parse_recipe(
        {**MINIMAL_RECIPE, "learning_rates": {"values": [1e-3 * (i + 1) for i in range(count)]}}
    )
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
    victim = sorted((tmp_path / "trials").glob("*.parquet"))[1]  # one part per trial, in order
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    result = read_trials(tmp_path)
    assert result.table.num_rows == 2
    assert len(result.problems) == 1 and str(victim) in result.problems[0]


def _write_many(folder: str, count: int) -> None:
    recipe = parse_recipe(
        {**MINIMAL_RECIPE, "learning_rates": {"values": [1e-4 * (i + 1) for i in range(count)]}}
    )
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
    assert not [n for n in os.listdir(tmp_path / "trials") if n.startswith(".")], (
        "temporary files left behind"
    )


def test_empty_run_folder_reads_as_empty_table(tmp_path: Path) -> None:
    result = read_trials(tmp_path)
    assert result.table.num_rows == 0 and result.table.schema.equals(TRIALS_SCHEMA)
    assert isinstance(result.table, pa.Table)


def _parts(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.parquet"))


def test_buffered_trials_are_written_as_one_part_when_flushed(tmp_path: Path) -> None:
    sink = ResultSink(tmp_path, max_buffered=4, max_buffer_seconds=3600)
    specs = _specs(6)
    for spec in specs[:3]:
        sink.record(spec, _outcome(spec.trial_id))
    assert read_trials(tmp_path).table.num_rows == 0 and sink.buffered == 3 and not sink.flush_due()
    sink.record(specs[3], _outcome(specs[3].trial_id))  # the fourth fills the buffer
    assert sink.buffered == 0 and _parts(tmp_path / "trials") == ["000000000-part.parquet"]
    for spec in specs[4:]:
        sink.record(spec, _outcome(spec.trial_id))
    assert sink.flush() == 2
    assert (
        _parts(tmp_path / "trials")
        == _parts(tmp_path / "curves")
        == ["000000000-part.parquet", "000000001-part.parquet"]
    )
    assert sorted(read_trials(tmp_path).table.column("trial_id").to_pylist()) == sorted(
        s.trial_id for s in specs
    )
    assert read_curves(tmp_path).table.num_rows == 6 * 4


def test_a_rerun_trial_keeps_its_latest_row_and_curve_across_parts_and_compaction(tmp_path: Path) -> None:
    sink = ResultSink(tmp_path, max_buffered=2)
    first, second = _specs(2)
    sink.record(first, _outcome(first.trial_id, loss=9.0, steps=3))
    sink.record(second, _outcome(second.trial_id, loss=4.0))
    sink.record(first, _outcome(first.trial_id, loss=3.0, steps=5), attempt=2)  # a re-run
    sink.flush()
    for _ in range(2):  # as written, then compacted
        trials = read_trials(tmp_path).to_pandas().set_index("trial_id")
        assert len(trials) == 2 and trials.loc[first.trial_id, "loss"] == 3.0
        assert trials.loc[first.trial_id, "attempt"] == 2
        curves = read_curves(tmp_path).to_pandas()
        assert sorted(curves[curves["trial_id"] == first.trial_id]["step"]) == [1, 2, 3, 4, 5]
        assert len(curves) == 5 + 4
        sink.compact()
    assert _parts(tmp_path / "trials") == _parts(tmp_path / "curves") == ["000000001-compact.parquet"]
    assert len(pd.read_parquet(tmp_path / "trials")) == 2  # plain pandas sees the same rows


def test_readers_select_columns(tmp_path: Path) -> None:
    sink = ResultSink(tmp_path)
    for spec in _specs(2):
        sink.record(spec, _outcome(spec.trial_id))
    table = read_trials(tmp_path, columns=["status", "loss"]).table
    assert table.column_names == ["trial_id", "status", "loss"] and table.num_rows == 2
    assert read_curves(tmp_path, columns=["step"]).table.column_names == ["trial_id", "step"]


def test_compaction_sets_damaged_parts_aside_and_keeps_the_rest(tmp_path: Path) -> None:
    sink = ResultSink(tmp_path)
    specs = _specs(3)
    for spec in specs:
        sink.record(spec, _outcome(spec.trial_id))
    victim = sorted((tmp_path / "trials").glob("*.parquet"))[0]
    victim.write_bytes(victim.read_bytes()[:50])
    (tmp_path / "trials" / ".000000009-part.parquet.x.tmp").write_bytes(b"half a file")  # a killed writer's
    problems = compact_run(tmp_path)
    assert len(problems) == 1 and victim.name in problems[0]
    assert (tmp_path / "trials" / "_damaged" / victim.name).is_file()
    assert _parts(tmp_path / "trials") == ["000000002-compact.parquet"]
    assert not [n for n in os.listdir(tmp_path / "trials") if n.startswith(".")]
    result = read_trials(tmp_path)
    assert result.problems == [] and result.table.num_rows == 2
    assert len(pd.read_parquet(tmp_path / "trials")) == 2


def _write_parts(folder: str, parts: int, per_part: int) -> None:
    recipe = parse_recipe(
        {**MINIMAL_RECIPE, "learning_rates": {"values": [1e-4 * (i + 1) for i in range(parts * per_part)]}}
    )
    sink = ResultSink(Path(folder), max_buffered=per_part)
    for spec in plan_trials(recipe, "data0"):
        sink.record(spec, _outcome(spec.trial_id, steps=50))


def _compact_killed_at(folder: str, call: str, at: int) -> None:
    """Compact, SIGKILLing this process just before its ``at``-th (0-based) ``os.replace`` or
    file removal: a death with no cleanup at a chosen step (runs in a child process)."""
    original = os.replace if call == "replace" else Path.unlink
    calls = iter(range(1_000_000))

    def dying(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if next(calls) == at:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    if call == "replace":
        os.replace = dying
    else:
        Path.unlink = dying
    compact_run(folder)


# Curves are compacted before trials; each step of each: the compacted file written but not
# renamed (replace 0 / 1), renamed with no part removed (unlink 0 / 20), parts half removed.
KILL_POINTS = [("replace", 0), ("unlink", 0), ("unlink", 10), ("replace", 1), ("unlink", 20), ("unlink", 30)]


def test_compaction_killed_at_each_step_loses_nothing(tmp_path: Path) -> None:
    """After a SIGKILL at any step of a compaction the folder reads whole, and the next
    compaction (a resume's) finishes the job."""
    import shutil

    template = tmp_path / "template"
    _write_parts(str(template), 20, 5)
    expected = sorted(read_trials(template).table.column("trial_id").to_pylist())
    assert len(expected) == 100
    expected_curve_rows = read_curves(template).table.num_rows
    # fork: the child starts at once (no re-import) and dies before touching pytest's state.
    context = multiprocessing.get_context("fork")
    for index, (call, at) in enumerate(KILL_POINTS):
        folder = tmp_path / f"run{index}"
        shutil.copytree(template, folder)
        process = context.Process(target=_compact_killed_at, args=(str(folder), call, at))
        process.start()
        process.join(timeout=120)
        assert process.exitcode == -signal.SIGKILL, (call, at, process.exitcode)
        result = read_trials(folder)
        assert result.problems == []
        assert sorted(result.table.column("trial_id").to_pylist()) == expected
        assert read_curves(folder).table.num_rows == expected_curve_rows
        compact_run(folder)
        assert len(_parts(folder / "trials")) == len(_parts(folder / "curves")) == 1
        assert sorted(pd.read_parquet(folder / "trials")["trial_id"]) == expected
        assert len(pd.read_parquet(folder / "curves")) == expected_curve_rows
        assert not [n for n in os.listdir(folder / "trials") if n.startswith(".")]


def test_state_between_compacted_rename_and_part_removal_reads_whole(tmp_path: Path) -> None:
    """The one state a kill can leave that differs from before or after: the compacted file
    is in place and the parts it replaces are still there."""
    import shutil

    run, copy = tmp_path / "run", tmp_path / "copy"
    sink = ResultSink(run, max_buffered=2)
    specs = _specs(5)
    for spec in specs:
        sink.record(spec, _outcome(spec.trial_id))
    sink.flush()
    shutil.copytree(run, copy)
    compact_run(copy)
    for dataset in ("trials", "curves"):
        (compacted,) = (copy / dataset).glob("*.parquet")
        shutil.copy(compacted, run / dataset / compacted.name)
    assert len(_parts(run / "trials")) == 4  # three parts and the compacted file
    assert sorted(read_trials(run).table.column("trial_id").to_pylist()) == sorted(s.trial_id for s in specs)
    assert read_curves(run).table.num_rows == 5 * 4
    compact_run(run)
    assert _parts(run / "trials") == ["000000002-compact.parquet"]
    assert len(pd.read_parquet(run / "trials")) == 5


def test_parts_written_before_later_columns_read_them_as_null(tmp_path: Path) -> None:
    # An older part lacks columns the schema gained since (warmup_steps, parametrization...)
    # and holds float timestamps: both a fresh part beside it and the old one read whole.
    old_fields = [f for f in TRIALS_SCHEMA if f.name not in ("warmup_steps", "parametrization")]
    legacy = pa.schema(
        [pa.field(f.name, pa.float64()) if f.name in ("started_at", "ended_at") else f for f in old_fields]
    )
    row = {f.name: None for f in legacy}
    row.update(trial_id="old", status="complete", loss=2.0, started_at=1_700_000_000.0)
    (tmp_path / "trials").mkdir()
    pq.write_table(pa.Table.from_pylist([row], schema=legacy), tmp_path / "trials" / "000000000-part.parquet")
    new = {f.name: None for f in TRIALS_SCHEMA}
    new.update(trial_id="new", status="complete", loss=1.5, warmup_steps=100)
    pq.write_table(
        pa.Table.from_pylist([new], schema=TRIALS_SCHEMA), tmp_path / "trials" / "000000001-part.parquet"
    )
    read = read_trials(tmp_path)
    assert not read.problems
    by_id = {r["trial_id"]: r for r in read.table.to_pylist()}
    assert by_id["old"]["warmup_steps"] is None and by_id["new"]["warmup_steps"] == 100
    assert by_id["old"]["loss"] == 2.0 and by_id["old"]["started_at"] is not None
