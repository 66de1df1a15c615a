"""Results: the Parquet datasets of a run folder (schema, atomic sink, tolerant reader)."""

from sweeper.results.compact import compact_run
from sweeper.results.reader import ReadResult, damaged_curves, read_curves, read_trials
from sweeper.results.schema import CURVES_SCHEMA, TRIALS_SCHEMA
from sweeper.results.sink import ResultSink, write_part

__all__ = [
    "CURVES_SCHEMA",
    "TRIALS_SCHEMA",
    "compact_run",
    "ReadResult",
    "ResultSink",
    "damaged_curves",
    "read_curves",
    "read_trials",
    "write_part",
]
