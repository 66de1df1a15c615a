"""Results reader: the run folder's Parquet datasets as tables, damaged parts reported.

A part file that cannot be read (truncated by a full disk, a copy cut short) is never a
crash and never silently dropped: it is skipped and named in ``problems``, which the CLI
prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from sweeper.results.schema import CURVES_DIR, CURVES_SCHEMA, TIMESTAMP, TRIALS_DIR, TRIALS_SCHEMA


@dataclass
class ReadResult:
    table: pa.Table
    problems: list[str] = field(default_factory=list)

    def to_pandas(self):  # noqa: ANN201 (pandas is optional for callers)
        return self.table.to_pandas()


def _part_files(dataset_dir: Path) -> list[Path]:
    if not dataset_dir.is_dir():
        return []
    return sorted(p for p in dataset_dir.glob("*.parquet") if not p.name.startswith((".", "_")))


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
    return table.select(schema.names).cast(schema)


def read_dataset(dataset_dir: Path, schema: pa.Schema) -> ReadResult:
    files = _part_files(Path(dataset_dir))
    if not files:
        return ReadResult(schema.empty_table())
    try:
        # Fast path: one scan of the whole folder.
        table = ds.dataset([str(f) for f in files], schema=schema, format="parquet").to_table()
        return ReadResult(table)
    except (pa.ArrowInvalid, pa.ArrowException, OSError):
        pass
    # Slow path, only when some part is damaged: read file by file to name the bad ones.
    tables, problems = [], []
    for path in files:
        try:
            tables.append(_read_part(path, schema))
        except (pa.ArrowInvalid, pa.ArrowException, OSError) as error:
            reason = str(error).strip().splitlines()[0][:160]
            problems.append(f"{path}: unreadable part file skipped ({reason})")
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    return ReadResult(table, problems)


def read_trials(run_dir: str | Path) -> ReadResult:
    """All trial rows of a run folder, one per trial id (the latest attempt wins)."""
    result = read_dataset(Path(run_dir) / TRIALS_DIR, TRIALS_SCHEMA)
    table = result.table
    if table.num_rows:
        # Importers and reruns can repeat a trial id across parts; keep its last row.
        ids = table.column("trial_id").to_pylist()
        last_index = {trial_id: index for index, trial_id in enumerate(ids)}
        if len(last_index) != len(ids):
            table = table.take(sorted(last_index.values()))
    return ReadResult(table, result.problems)


def read_curves(run_dir: str | Path) -> ReadResult:
    return read_dataset(Path(run_dir) / CURVES_DIR, CURVES_SCHEMA)
