"""Results sink: turns trial outcomes into Parquet part files, atomically.

The rule: a reader never sees a half-written file. Each part is written whole under a hidden
temporary name and renamed into place (``runfolder.atomic_write``); pyarrow datasets and
pandas skip names starting with '.' or '_'.

Finished trials are buffered briefly and written together as one multi-trial part (a
one-row Parquet file is ~12 KB of footer, and 20,000 of them take half a minute to open).
A part's name starts with a sequence number, so the order in which parts were written is
the order of their names: when a trial id appears in several parts (a failed trial that
re-ran), readers keep the latest. A killed driver loses only the trials still in its buffer,
which were never recorded and so run again on resume. ``compact`` (compact.py) folds the
parts into one file per dataset when a sweep finishes or resumes.
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sweeper.outcome import TrialOutcome
from sweeper.plan import TrialSpec
from sweeper.results.parts import next_sequence, sequenced_name
from sweeper.results.schema import CURVES_DIR, CURVES_SCHEMA, TRIALS_DIR, TRIALS_SCHEMA
from sweeper.runfolder import atomic_write


def write_part(dataset_dir: Path, name: str, table: pa.Table) -> Path:
    """Write ``table`` as ``dataset_dir/<name>.parquet``, atomically (see module doc)."""
    return atomic_write(Path(dataset_dir) / f"{name}.parquet", lambda stream: pq.write_table(table, stream))


def utc_time(unix_seconds: float | None) -> datetime | None:
    """Unix seconds (what trainers measure) as the aware datetime a timestamp column holds."""
    if unix_seconds is None or not math.isfinite(unix_seconds):
        return None
    return datetime.fromtimestamp(unix_seconds, tz=timezone.utc)


def trial_row(spec: TrialSpec, outcome: TrialOutcome, attempt: int = 1) -> dict[str, Any]:
    shape = spec.shape
    row = {
        "trial_id": spec.trial_id,
        "sweep": spec.sweep,
        "cell_id": spec.cell_id,
        "shape": shape.name,
        "d_model": shape.d_model,
        "n_layers": shape.n_layers,
        "n_heads": shape.n_heads,
        "seq_len": shape.seq_len,
        "vocab_size": shape.vocab_size,
        "n_params": shape.n_params_nonembedding,
        "n_params_total": shape.n_params_total,
        "flops_per_token": shape.flops_per_token_nonembedding,
        "tokens_budget": spec.tokens_budget,
        "lr": spec.lr,
        "batch_size": spec.batch_size,
        "batch_size_tokens": spec.batch_size_tokens,
        "schedule": spec.schedule.kind,
        "warmup_fraction": spec.schedule.warmup_fraction,
        "warmup_steps": spec.warmup_steps,
        "min_lr_ratio": spec.schedule.min_lr_ratio,
        "decay_fraction": spec.schedule.decay_fraction,
        "weight_decay": spec.optimizer.weight_decay,
        "parametrization": spec.parametrization,
        "mup_base_width": spec.mup_base_width,
        "seed": spec.seed,
        "data_identity": spec.data_identity,
        "status": outcome.status,
        "loss": outcome.final_val_loss,
        "smoothed_train_loss": outcome.smoothed_train_loss,
        "initial_loss": outcome.initial_loss,
        "steps": outcome.steps_done,
        "tokens": outcome.tokens_done,
        "wall_seconds": outcome.wall_seconds,
        "tokens_per_second": outcome.tokens_per_second,
        "started_at": utc_time(outcome.started_at),
        "ended_at": utc_time(outcome.ended_at),
        "diverged_step": outcome.diverged_step,
        "error": outcome.error,
        "node_id": outcome.node_id,
        "attempt": attempt,
    }
    if outcome.recorded:
        row.update({name: value for name, value in outcome.recorded.items() if name in REPLAYED_COLUMNS})
    return row


# What a replayed row takes from its table rather than from the spec (see TrialOutcome.recorded).
REPLAYED_COLUMNS = frozenset(
    {
        "shape",
        "d_model",
        "n_layers",
        "n_heads",
        "vocab_size",
        "n_params",
        "n_params_total",
        "flops_per_token",
        "schedule",
        "warmup_fraction",
        "min_lr_ratio",
        "decay_fraction",
        "weight_decay",
        "data_identity",
        "smoothed_train_loss",
        "initial_loss",
        "steps",
        "tokens",
    }
)


def curve_columns(outcome: TrialOutcome) -> dict[str, list]:
    points = outcome.curve
    return {
        "trial_id": [outcome.trial_id] * len(points),
        "step": [p.step for p in points],
        "tokens": [p.tokens for p in points],
        "lr": [p.lr for p in points],
        "train_loss": [p.train_loss for p in points],
        "val_loss": [p.val_loss for p in points],
    }


def curve_table(outcome: TrialOutcome) -> pa.Table:
    return pa.table(curve_columns(outcome), schema=CURVES_SCHEMA)


class ResultSink:
    """Writes finished trials of one run folder. The driver is its only writer.

    ``max_buffered`` trials (or ``max_buffer_seconds`` since the oldest buffered one, checked
    by ``flush_due``) go into one part; the default of 1 writes each trial as it comes. A
    part's curves are written before its trial rows: a trial row therefore always has its
    curve, and a crash between the two leaves only orphan curves, which readers ignore and
    the rerun replaces.
    """

    def __init__(self, run_dir: Path, max_buffered: int = 1, max_buffer_seconds: float = 2.0):
        self.run_dir = Path(run_dir)
        self.trials_dir = self.run_dir / TRIALS_DIR
        self.curves_dir = self.run_dir / CURVES_DIR
        self.max_buffered = max(1, max_buffered)
        self.max_buffer_seconds = max_buffer_seconds
        self._rows: list[dict] = []
        self._curves: dict[str, list] = {name: [] for name in CURVES_SCHEMA.names}
        self._oldest: float | None = None
        self._sequence: int | None = None  # read from the folder at the first write

    def record(self, spec: TrialSpec, outcome: TrialOutcome, attempt: int = 1) -> None:
        """Buffer one finished trial; write the buffer as a part once it is full."""
        self._rows.append(trial_row(spec, outcome, attempt))
        for name, values in curve_columns(outcome).items():
            self._curves[name].extend(values)
        if self._oldest is None:
            self._oldest = time.monotonic()
        if len(self._rows) >= self.max_buffered:
            self.flush()

    @property
    def buffered(self) -> int:
        return len(self._rows)

    def flush_due(self) -> bool:
        """Whether the buffer has waited ``max_buffer_seconds`` (only the file layout, never
        the content of the results, depends on this clock)."""
        return self._oldest is not None and time.monotonic() - self._oldest >= self.max_buffer_seconds

    def flush(self) -> int:
        """Write the buffered trials as one part (curves first); return how many."""
        if not self._rows:
            return 0
        name = sequenced_name(self._take_sequence(), "part")
        write_part(self.curves_dir, name, pa.table(self._curves, schema=CURVES_SCHEMA))
        write_part(self.trials_dir, name, pa.Table.from_pylist(self._rows, schema=TRIALS_SCHEMA))
        written = len(self._rows)
        self._rows = []
        self._curves = {name: [] for name in CURVES_SCHEMA.names}
        self._oldest = None
        return written

    def compact(self) -> None:
        """Flush, then fold every part of both datasets into one file each (compact.py)."""
        from sweeper.results.compact import compact_run

        self.flush()
        compact_run(self.run_dir)
        self._sequence = None

    def record_rows(self, rows: list[dict[str, Any]], name: str) -> Path:
        """Write already-formed trial rows (importers) as one part file."""
        table = pa.Table.from_pylist(rows, schema=TRIALS_SCHEMA)
        return write_part(self.trials_dir, sequenced_name(self._take_sequence(), name), table)

    def _take_sequence(self) -> int:
        if self._sequence is None:
            self._sequence = next_sequence(self.trials_dir, self.curves_dir)
        sequence = self._sequence
        self._sequence += 1
        return sequence
