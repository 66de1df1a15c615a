"""Compaction: fold a dataset's part files into one file, never showing a partial state.

A sweep writes many small parts while it runs (sink.py); a finished or resumed sweep folds
them into one file per dataset, so that later reads open one file instead of thousands.
The steps, each safe to be killed after:

1. leftover temporaries of a killed writer are removed (the driver's lock says no one else
   writes here);
2. every readable part is read and each trial's latest rows kept (as the reader does);
   unreadable parts move to ``_damaged/`` (hidden from readers), their trials re-run;
3. the result is written atomically as ``<highest sequence>-compact.parquet``: from now on
   it holds every row the parts hold, and it sorts before any later part;
4. the parts it replaces are removed.

Killed before 3, the parts are untouched; killed between 3 and 4, a trial is in two files
for a moment and readers keep one row of it (the latest); the next compaction finishes
the job.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sweeper.results.parts import part_files, part_sequence, sequenced_name
from sweeper.results.reader import UNREADABLE_ERRORS, keep_latest, unreadable_reason
from sweeper.results.schema import CURVES_DIR, CURVES_SCHEMA, TRIALS_DIR, TRIALS_SCHEMA
from sweeper.results.sink import write_part

DAMAGED_DIR = "_damaged"


def compact_dataset(dataset_dir: Path, schema: pa.Schema, latest: str) -> list[str]:
    """Fold ``dataset_dir``'s parts into one file; return the problems (damaged parts)."""
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        return []
    for temporary in dataset_dir.glob(".*.tmp"):
        temporary.unlink(missing_ok=True)
    files = part_files(dataset_dir)
    if len(files) <= 1:
        return []
    tables: list[pa.Table] = []
    file_index: list[np.ndarray] = []
    problems: list[str] = []
    readable: list[Path] = []
    for path in files:
        try:
            table = pq.read_table(path, schema=schema)
        except UNREADABLE_ERRORS as error:
            problems.append(
                f"{path}: unreadable part file moved to {DAMAGED_DIR}/ ({unreadable_reason(error)})"
            )
            (dataset_dir / DAMAGED_DIR).mkdir(exist_ok=True)
            path.replace(dataset_dir / DAMAGED_DIR / path.name)
            continue
        tables.append(table)
        file_index.append(np.full(table.num_rows, len(readable), dtype=np.int64))
        readable.append(path)
    if not readable:
        return problems
    merged = pa.concat_tables(tables)
    if merged.num_rows:
        merged = keep_latest(merged, np.concatenate(file_index), latest)
    name = sequenced_name(max(0, max(part_sequence(p) for p in readable)), "compact")
    target = write_part(dataset_dir, name, merged)
    for path in readable:
        if path != target:
            path.unlink(missing_ok=True)
    return problems


def compact_run(run_dir: str | Path) -> list[str]:
    """Compact a run folder's curves, then its trials (a trial row never lacks its curve).
    The caller owns the run folder (the driver, under its lock)."""
    run_dir = Path(run_dir)
    problems = compact_dataset(run_dir / CURVES_DIR, CURVES_SCHEMA, latest="part")
    return problems + compact_dataset(run_dir / TRIALS_DIR, TRIALS_SCHEMA, latest="row")
