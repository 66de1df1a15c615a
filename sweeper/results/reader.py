"""Results reader: the run folder's Parquet datasets as tables, damaged parts reported.

A part file that cannot be read (truncated by a full disk, a copy cut short) is never a
crash and never silently dropped: it is skipped and named in ``problems``, which the CLI
prints. Readers ask for the columns they use: Parquet is columnar, and a status or a
resume needs a few of the 37 trial columns.

One trial id can be in several parts (a failed trial that re-ran; the few moments between
a compacted file's rename and the removal of the parts it replaces): its rows from the
latest part win (parts sort in write order, sink.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from sweeper.results.parts import part_files
from sweeper.results.schema import CURVES_DIR, CURVES_SCHEMA, TIMESTAMP, TRIALS_DIR, TRIALS_SCHEMA

# What pyarrow raises for a file that is not (or no longer) whole Parquet.
UNREADABLE_ERRORS = (pa.ArrowInvalid, pa.ArrowException, OSError)


@dataclass
class ReadResult:
    table: pa.Table
    problems: list[str] = field(default_factory=list)

    def to_pandas(self):  # noqa: ANN201 (pandas is optional for callers)
        return self.table.to_pandas()


def unreadable_reason(error: Exception) -> str:
    return str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__


def _read_part(path: Path, schema: pa.Schema) -> pa.Table:
    """One part file in ``schema``. Parts written before the trials schema's version 2 hold
    started_at/ended_at as float unix seconds; they are read as timestamps."""
    try:
        return pq.read_table(path, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        table = pq.read_table(path)
    for name in ("started_at", "ended_at"):
        if name in table.column_names and pa.types.is_floating(table.schema.field(name).type):
            micros = pc.cast(pc.round(pc.multiply(table.column(name), 1e6)), pa.int64())
            table = table.set_column(table.column_names.index(name), name, micros.cast(TIMESTAMP))
    # Columns added to the schema after the part was written read as null, as the fast
    # path's dataset scan reads them.
    for column in schema:
        if column.name not in table.column_names:
            table = table.append_column(column, pa.nulls(table.num_rows, column.type))
    return table.select(schema.names).cast(schema)


def _columns(schema: pa.Schema, columns: Sequence[str] | None) -> list[str]:
    if columns is None:
        return list(schema.names)
    unknown = [c for c in columns if c not in schema.names]
    if unknown:
        raise ValueError(f"not columns of this dataset: {', '.join(unknown)}")
    # trial_id is needed to keep each trial's latest rows.
    return ["trial_id", *[c for c in columns if c != "trial_id"]]


def read_dataset(
    dataset_dir: Path, schema: pa.Schema, columns: Sequence[str] | None = None, latest: str = "row"
) -> ReadResult:
    """``columns`` of every readable part; per trial id, only its latest ``row`` (trials) or
    the rows of its latest ``part`` (curves: one row per step)."""
    files = part_files(Path(dataset_dir))
    wanted = _columns(schema, columns)
    if not files:
        return ReadResult(schema.empty_table().select(wanted))
    problems: list[str] = []
    try:
        # Fast path: one multithreaded scan of the whole folder; each batch names its file.
        dataset = ds.dataset([str(f) for f in files], schema=schema, format="parquet")
        order = {str(f): index for index, f in enumerate(files)}
        batches, file_index = [], []
        for tagged in dataset.scanner(columns=wanted).scan_batches():
            batches.append(tagged.record_batch)
            file_index.append(
                np.full(tagged.record_batch.num_rows, order[tagged.fragment.path], dtype=np.int64)
            )
        table = pa.Table.from_batches(batches, schema=schema.empty_table().select(wanted).schema)
    except UNREADABLE_ERRORS:
        # Slow path, only when some part is damaged (or written by an older version): read
        # file by file to name the bad ones.
        tables, file_index = [], []
        for index, path in enumerate(files):
            try:
                part = _read_part(path, schema).select(wanted)
            except UNREADABLE_ERRORS as error:
                problems.append(f"{path}: unreadable part file skipped ({unreadable_reason(error)})")
                continue
            tables.append(part)
            file_index.append(np.full(part.num_rows, index, dtype=np.int64))
        table = pa.concat_tables(tables) if tables else schema.empty_table().select(wanted)
    if table.num_rows and len(files) > 1:
        table = keep_latest(table, np.concatenate(file_index), latest)
    return ReadResult(table, problems)


def keep_latest(table: pa.Table, file_index: np.ndarray, latest: str) -> pa.Table:
    """Rows kept per trial id: its last row (``row``), or all its rows from the last file
    that holds it (``part``). Vectorised: curves have a row per logged step."""
    codes = (
        pc.dictionary_encode(table.column("trial_id")).combine_chunks().indices.to_numpy(zero_copy_only=False)
    )
    rows = np.arange(table.num_rows)
    if latest == "row":
        last_row = np.full(codes.max() + 1, -1, dtype=np.int64)
        np.maximum.at(last_row, codes, rows)
        if len(last_row) == table.num_rows:
            return table
        return table.take(np.sort(last_row))
    last_file = np.full(codes.max() + 1, -1, dtype=np.int64)
    np.maximum.at(last_file, codes, file_index)
    keep = file_index == last_file[codes]
    return table if keep.all() else table.filter(pa.array(keep))


def damaged_curves(run_dir: str | Path) -> dict[str, str]:
    """Trial id -> problem, for each trial whose curve part cannot be read. Only footers are
    read (cheap for many parts): it is what a truncated or cut-short file loses. A curve
    part and the trials part of the same write share one file name, so the trials part says
    whose curves were lost (every trial of it, when it too is unreadable: its own name)."""
    damaged: dict[str, str] = {}
    for path in part_files(Path(run_dir) / CURVES_DIR):
        try:
            pq.read_metadata(path)
        except (pa.ArrowInvalid, pa.ArrowException, OSError) as error:
            reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
            try:
                twin = pq.read_table(Path(run_dir) / TRIALS_DIR / path.name, columns=["trial_id"])
                trial_ids = [str(t) for t in twin.column("trial_id").to_pylist()]
            except (pa.ArrowInvalid, pa.ArrowException, OSError):
                trial_ids = [path.stem]
            for trial_id in trial_ids:
                damaged[trial_id] = f"{path}: unreadable curve file ({reason})"
    return damaged


def read_trials(run_dir: str | Path, columns: Sequence[str] | None = None) -> ReadResult:
    """The trial rows of a run folder, one per trial id (the latest attempt wins);
    ``columns`` (trial_id always included) or all of them."""
    return read_dataset(Path(run_dir) / TRIALS_DIR, TRIALS_SCHEMA, columns, latest="row")


def read_curves(run_dir: str | Path, columns: Sequence[str] | None = None) -> ReadResult:
    return read_dataset(Path(run_dir) / CURVES_DIR, CURVES_SCHEMA, columns, latest="part")
