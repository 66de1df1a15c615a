"""The Parquet schemas of a run folder: ``trials/`` (one row per trial) and ``curves/``
(one row per logged step). Units are in the column names or below; see docs/run-folder.md.

Every part file of a dataset has exactly these schemas, so a reader (pyarrow, pandas,
DuckDB) can open the folder as one table without reconciling types.
"""

from __future__ import annotations

import pyarrow as pa

TRIALS_SCHEMA_VERSION = 2  # 2: started_at/ended_at are timestamps (1: float unix seconds)

# A Parquet timestamp, not float seconds: pandas, DuckDB and Spark read it as a date-time.
TIMESTAMP = pa.timestamp("us", tz="UTC")

TRIALS_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),  # content hash of what determines the run (plan.py)
        ("sweep", pa.string()),
        ("cell_id", pa.string()),  # one (shape, D) cell
        ("shape", pa.string()),  # e.g. d64-l2-h4-s64-v256
        ("d_model", pa.int32()),
        ("n_layers", pa.int32()),
        ("n_heads", pa.int32()),
        ("seq_len", pa.int32()),  # tokens per sequence
        ("vocab_size", pa.int32()),
        ("n_params", pa.int64()),  # N: non-embedding parameters (the law's model size)
        ("n_params_total", pa.int64()),  # all parameters, embeddings included
        ("flops_per_token", pa.float64()),  # M: non-embedding FLOPs/token (DeepSeek), fwd+bwd
        ("tokens_budget", pa.int64()),  # D asked for by the recipe (the cell's D)
        ("lr", pa.float64()),  # peak learning rate of the schedule
        ("batch_size", pa.int32()),  # B in sequences of seq_len
        ("batch_size_tokens", pa.int64()),  # B in tokens = batch_size * seq_len
        ("schedule", pa.string()),  # cosine | constant | wsd | imported name
        ("warmup_fraction", pa.float64()),  # null when the recipe gave warmup in steps
        ("warmup_steps", pa.int64()),  # warmup steps this run took (count or fraction x steps)
        ("min_lr_ratio", pa.float64()),
        ("decay_fraction", pa.float64()),
        ("weight_decay", pa.float64()),
        ("parametrization", pa.string()),  # standard | mup
        ("mup_base_width", pa.int32()),  # μP's base width; null for standard
        ("seed", pa.int64()),
        ("data_identity", pa.string()),
        ("status", pa.string()),  # complete | diverged | failed | pruned | target
        ("loss", pa.float64()),  # headline: final held-out validation loss (nats/token)
        ("smoothed_train_loss", pa.float64()),  # EMA of train loss at the end
        ("initial_loss", pa.float64()),
        ("steps", pa.int64()),  # optimizer steps taken
        ("tokens", pa.int64()),  # tokens trained on (D rounded to whole steps)
        ("wall_seconds", pa.float64()),
        ("tokens_per_second", pa.float64()),
        ("started_at", TIMESTAMP),  # when training began (UTC, microseconds)
        ("ended_at", TIMESTAMP),
        ("diverged_step", pa.int64()),
        ("error", pa.string()),
        ("node_id", pa.string()),  # Ray node that ran the trial
        ("attempt", pa.int32()),  # driver-level runs of this trial id: 2 after a failed run re-ran
    ]
)

CURVES_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("step", pa.int64()),
        ("tokens", pa.int64()),
        ("lr", pa.float64()),
        ("train_loss", pa.float64()),
        ("val_loss", pa.float64()),  # null where not measured at this step
    ]
)

TRIALS_DIR = "trials"
CURVES_DIR = "curves"
