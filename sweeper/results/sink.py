"""Results sink: turns trial outcomes into Parquet part files, atomically.

The rule: a reader never sees a half-written file. Each part is written with
runfolder.atomic_write (a hidden temporary name in the same folder, which pyarrow datasets
and pandas skip, flushed to disk, then renamed into place). Part files are named after the trial id, so writing the same
trial twice replaces one file with an identical one: a trial is in the results once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sweeper.outcome import TrialOutcome
from sweeper.plan import TrialSpec
from sweeper.results.schema import CURVES_DIR, CURVES_SCHEMA, TRIALS_DIR, TRIALS_SCHEMA
from sweeper.runfolder import atomic_write


def write_part(dataset_dir: Path, name: str, table: pa.Table) -> Path:
    """Write ``table`` as ``dataset_dir/<name>.parquet``, atomically (see module doc)."""
    return atomic_write(Path(dataset_dir) / f"{name}.parquet", lambda stream: pq.write_table(table, stream))


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
        "started_at": outcome.started_at,
        "ended_at": outcome.ended_at,
        "diverged_step": outcome.diverged_step,
        "error": outcome.error,
        "node_id": outcome.node_id,
        "attempt": attempt,
    }
    if outcome.recorded:
        row.update({name: value for name, value in outcome.recorded.items() if name in REPLAYED_COLUMNS})
    return row


# What a replayed row takes from its table rather than from the spec (see TrialOutcome.recorded).
REPLAYED_COLUMNS = frozenset({
    "shape", "d_model", "n_layers", "n_heads", "vocab_size", "n_params", "n_params_total",
    "flops_per_token", "schedule", "warmup_fraction", "min_lr_ratio", "decay_fraction",
    "weight_decay", "data_identity", "smoothed_train_loss", "initial_loss", "steps", "tokens",
})


def curve_table(outcome: TrialOutcome) -> pa.Table:
    points = outcome.curve
    return pa.table(
        {
            "trial_id": [outcome.trial_id] * len(points),
            "step": [p.step for p in points],
            "tokens": [p.tokens for p in points],
            "lr": [p.lr for p in points],
            "train_loss": [p.train_loss for p in points],
            "val_loss": [p.val_loss for p in points],
        },
        schema=CURVES_SCHEMA,
    )


class ResultSink:
    """Writes finished trials of one run folder. The driver is its only writer.

    The curve is written before the trial row: a trial row therefore always has its curve,
    and a crash between the two leaves only an orphan curve, which readers ignore and the
    rerun replaces.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.trials_dir = self.run_dir / TRIALS_DIR
        self.curves_dir = self.run_dir / CURVES_DIR

    def record(self, spec: TrialSpec, outcome: TrialOutcome, attempt: int = 1) -> None:
        write_part(self.curves_dir, spec.trial_id, curve_table(outcome))
        row = pa.Table.from_pylist([trial_row(spec, outcome, attempt)], schema=TRIALS_SCHEMA)
        write_part(self.trials_dir, spec.trial_id, row)

    def record_rows(self, rows: list[dict[str, Any]], name: str) -> Path:
        """Write already-formed trial rows (importers) as one part file."""
        return write_part(self.trials_dir, name, pa.Table.from_pylist(rows, schema=TRIALS_SCHEMA))
