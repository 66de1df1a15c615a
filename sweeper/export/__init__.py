"""Export: fitted hyperparameters as a versioned table and in other trainers' own terms.

``table`` builds one flat record per target (schema ``sweeper.hparams``) and writes it as
JSON, YAML, CSV or Parquet; ``adapters`` turns records into Hugging Face TrainingArguments
JSON, torchtitan and Megatron-LM command lines, or a nanoGPT config file, each for a named
release of that trainer. Nothing here imports ray or torch (pyarrow only to write Parquet),
so a training script can use it next to ``sweeper.hparams.load_hparams``.
"""

from __future__ import annotations

from pathlib import Path

from sweeper.export.adapters import ADAPTERS, RELEASES
from sweeper.export.table import (
    SCHEMA_NAME,
    SCHEMA_VERSION,
    TABLE_FORMATS,
    ExportError,
    Target,
    build_records,
    load_targets,
    read_table,
    render_table,
)

FORMATS: tuple[str, ...] = TABLE_FORMATS + tuple(ADAPTERS)


def export(
    fit_json: str | Path,
    targets: list[Target],
    fmt: str,
    *,
    round_to: int | None = None,
    world_size: int = 1,
    micro_batch: int | None = None,
    force: bool = False,
    schedule: dict | None = None,
) -> str | bytes:
    """The export of ``targets`` in ``fmt`` (text, or bytes for parquet).

    ``round_to`` defaults to world_size x micro_batch (1 when neither is given), so the
    global batch always splits evenly over the ranks the adapters are told about.
    ``force`` exports what would be refused, each reason a FORCED warning in every record.
    ``schedule`` (recipe.Schedule's keys) states the proxies' schedule of a fit that recorded none.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    if round_to is None:
        round_to = world_size * (micro_batch or 1)
    records = build_records(fit_json, targets, round_to, force, schedule)
    if fmt in TABLE_FORMATS:
        return render_table(records, fmt)
    return ADAPTERS[fmt](records, world_size, micro_batch)


__all__ = [
    "ADAPTERS",
    "FORMATS",
    "RELEASES",
    "SCHEMA_NAME",
    "SCHEMA_VERSION",
    "ExportError",
    "Target",
    "build_records",
    "export",
    "load_targets",
    "read_table",
    "render_table",
]
