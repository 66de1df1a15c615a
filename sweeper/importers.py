"""Importers: other people's sweep tables -> sweeper's trials schema, in a run folder.

After an import, everything downstream (status, fit, predict, plots) works on the folder
unchanged. Values are stored as the source wrote them (the table is the record); the fitter
does the cleaning (grid-value rounding, diverged runs, thin cells) and says what it did.

* `import_steplaw` -- Step Law's released layout (github.com/step-law/steplaw, data/*.csv):
  lr, bs (sequences of seq_len), N and/or Na, D, loss, "smooth loss", optional M, h, numl, numh.
  The headline ``loss`` column gets "smooth loss" by default: the paper's fits use it.
* `import_table` -- any CSV/Parquet with a column mapping ``schema_column -> source_column``.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from sweeper.errors import SweeperError
from sweeper.outcome import TrialStatus
from sweeper.results.schema import TRIALS_SCHEMA
from sweeper.runfolder import check_writable_folder

SCHEMA_COLUMNS = TRIALS_SCHEMA.names
REQUIRED = ("lr", "loss", "n_params", "tokens_budget")
STEPLAW_MIN_LR = 1e-5  # absolute floor of Step Law's cosine schedule


class ImportError_(SweeperError):
    """Bad import input; the CLI prints it as one line and exits with code 2."""


def read_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise ImportError_(f"file not found: {path}")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except Exception as error:  # noqa: BLE001 (pandas raises many types for a malformed file)
        raise ImportError_(f"cannot read {path}: {str(error).splitlines()[0]}") from None


def _value(raw: Any) -> Any:
    if raw is None:
        return None
    if isinstance(raw, float) and math.isnan(raw):
        return None
    if hasattr(raw, "item"):
        raw = raw.item()
    return raw


def _trial_id(source: str, index: int, row: dict[str, Any]) -> str:
    # Source name and row index are part of the id: replicates with the same settings stay
    # separate trials, and importing the same file twice gives the same ids (a no-op).
    canonical = json.dumps({"source": source, "row": index, **row}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# A loss may be inf or NaN: that run diverged, which is data. Every other number sets up the
# run (sizes, lr, batch) and must be finite.
NON_FINITE_ALLOWED = ("loss", "smoothed_train_loss", "initial_loss")


def _number(raw: Any, column: str, index: int, *, whole: bool) -> float | int:
    where = f"column {column}, data row {index + 1}"
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ImportError_(f"{where}: {raw!r} is not a number") from None
    if not math.isfinite(value):
        if column in NON_FINITE_ALLOWED:
            return value
        raise ImportError_(f"{where}: {raw!r} is not a finite number")
    if whole and not -(2**63) <= value < 2**63:
        raise ImportError_(f"{where}: {raw!r} is out of range for a whole-number column")
    return int(round(value)) if whole else value


def _finish_rows(frame: pd.DataFrame, source: str) -> list[dict[str, Any]]:
    """Typed TRIALS_SCHEMA rows from a frame whose columns are schema names."""
    kinds = {f.name: str(f.type) for f in TRIALS_SCHEMA}
    rows = []
    for index, record in enumerate(frame.to_dict(orient="records")):
        row: dict[str, Any] = {name: None for name in SCHEMA_COLUMNS}
        for column, raw in record.items():
            name = str(column)
            value = _value(raw)
            if value is not None:
                kind = kinds[name]
                if kind.startswith("int") or kind == "double":
                    value = _number(value, name, index, whole=kind.startswith("int"))
                else:
                    value = str(value)
            row[name] = value
        for name in ("lr", "n_params", "tokens_budget"):
            if row[name] is None:
                raise ImportError_(f"column {name}, data row {index + 1}: empty (every run needs one)")
        if row["batch_size_tokens"] is None and row["batch_size"] and row["seq_len"]:
            row["batch_size_tokens"] = int(row["batch_size"]) * int(row["seq_len"])
        if row["batch_size"] is None and row["batch_size_tokens"] and row["seq_len"]:
            row["batch_size"] = max(1, round(row["batch_size_tokens"] / row["seq_len"]))
        if row["status"] is None:
            loss = row["loss"]
            finite = loss is not None and math.isfinite(loss)
            row["status"] = (TrialStatus.COMPLETE if finite else TrialStatus.DIVERGED).value
        row["sweep"] = row["sweep"] or source
        if row["cell_id"] is None:
            row["cell_id"] = f"N{row['n_params']:.4g}-D{row['tokens_budget']:.3g}-S{row['seq_len']}"
        row["attempt"] = row["attempt"] or 1
        row["trial_id"] = row["trial_id"] or _trial_id(
            source,
            index,
            {k: row[k] for k in ("n_params", "tokens_budget", "lr", "batch_size", "seq_len", "seed")},
        )
        rows.append(row)
    return rows


def _write(rows: list[dict[str, Any]], out: str | Path, name: str) -> Path:
    from sweeper.results.sink import ResultSink

    if not rows:
        raise ImportError_("the table has no rows")
    return ResultSink(Path(out)).record_rows(rows, name)


def import_table(
    path: str | Path,
    out: str | Path,
    mapping: dict[str, str],
    *,
    constants: dict[str, Any] | None = None,
    name: str | None = None,
) -> int:
    """Import any CSV/Parquet: ``mapping`` maps schema columns to source columns,
    ``constants`` sets schema columns to one value (e.g. seq_len=2048). Needs lr, loss,
    n_params, tokens_budget, seq_len and batch_size or batch_size_tokens. Returns the row count."""
    check_writable_folder(out, "--out")
    frame = read_table(path)
    constants = dict(constants or {})
    unknown = [c for c in list(mapping) + list(constants) if c not in SCHEMA_COLUMNS]
    if unknown:
        raise ImportError_(f"not trial columns: {', '.join(unknown)} (see sweeper.results.schema)")
    missing_source = [s for s in mapping.values() if s not in frame.columns]
    if missing_source:
        raise ImportError_(
            f"columns not in {Path(path).name}: {', '.join(missing_source)}"
            f" (it has: {', '.join(map(str, frame.columns))})"
        )
    given = set(mapping) | set(constants)
    missing = [c for c in REQUIRED + ("seq_len",) if c not in given]
    if "batch_size" not in given and "batch_size_tokens" not in given:
        missing.append("batch_size or batch_size_tokens")
    if missing:
        raise ImportError_(f"map or set these columns: {', '.join(missing)}")
    data = pd.DataFrame({target: frame[source] for target, source in mapping.items()})
    for column, value in constants.items():
        data[column] = value
    source = Path(path).stem
    rows = _finish_rows(data, source)
    _write(rows, out, name or f"import-{source}")
    return len(rows)


def import_steplaw(
    path: str | Path, out: str | Path, *, size_column: str = "N", loss_column: str = "smooth loss"
) -> int:
    """Import a Step Law table. ``size_column`` is the model size of the law (``Na``, the
    active parameters, for MoE tables); ``loss_column`` the headline loss. Returns rows."""
    check_writable_folder(out, "--out")
    frame = read_table(path)
    needed = ["lr", "bs", "D", size_column, loss_column]
    absent = [c for c in needed if c not in frame.columns]
    if absent:
        raise ImportError_(f"{Path(path).name} lacks Step Law columns: {', '.join(absent)}")
    seq_len = frame["seq_len"] if "seq_len" in frame.columns else 2048
    data = pd.DataFrame(
        {
            "n_params": frame[size_column],
            "tokens_budget": frame["D"],
            "lr": frame["lr"],
            "batch_size": frame["bs"],
            "seq_len": seq_len,
            "loss": frame[loss_column],
            # What the released table says of the schedule: cosine decay to an absolute floor of
            # 1e-5 (the "mlr1e-5" in every exp_name), i.e. min_lr_ratio = 1e-5 / lr per run. The
            # warmup is not in the table: it stays unknown, and an export asks for it.
            "schedule": "cosine",
            "min_lr_ratio": STEPLAW_MIN_LR / frame["lr"].astype(float),
        }
    )
    # Step Law's N is a non-embedding count (total for MoE experts, but without embeddings):
    # the table has no total with embeddings, so n_params_total stays null rather than wrong.
    optional = {
        "M": "flops_per_token",
        "h": "d_model",
        "numl": "n_layers",
        "numh": "n_heads",
        "smooth loss": "smoothed_train_loss",
        "ti": "steps",
        "total_time": "wall_seconds",
        "exp_name": "shape",
    }
    for column, target in optional.items():
        if column in frame.columns and target not in data.columns:
            data[target] = frame[column]
    data["batch_size_tokens"] = data["batch_size"] * data["seq_len"]
    data["tokens"] = data["tokens_budget"]
    source = Path(path).stem
    rows = _finish_rows(data, source)
    _write(rows, out, f"import-{source}")
    return len(rows)
