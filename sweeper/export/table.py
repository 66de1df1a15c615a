"""The hyperparameter table: one flat, versioned record per target run.

Contract (schema ``sweeper.hparams`` version ``SCHEMA_VERSION``; docs/fitting.md's "The table"
section lists every field with its unit):

- Every record is flat (scalars and strings only), so the same record is a JSON object, a
  YAML mapping, a CSV row and a Parquet row without translation; it carries its own
  ``schema_version`` and provenance, so a row copied out of its file still says where it
  came from.
- ``lr``, ``batch_size_tokens`` and their intervals are exactly ``Hparams.predict``'s (what
  ``sweeper predict`` prints). ``batch_size_sequences`` is the law's batch in sequences
  rounded to the nearest multiple of ``batch_round_to`` (at least one multiple); the
  rounding is shown in ``batch_size_sequences_exact``, ``batch_size_tokens_used`` and
  ``batch_rounding_change``.
- The schedule fields are those the proxies trained with, read from fit.json when it
  records them, else from the run's ``recipe.yaml`` next to fit.json; ``schedule`` is
  ``"unknown"`` (and the warmup/step fields null) when neither is there.
- Adding a field keeps the version; renaming or removing one, or changing a unit, bumps it.

Pure stdlib + numpy (through sweeper.hparams) + yaml; pyarrow only when Parquet is written.
No ray, no torch: a trainer's launch script may import this.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sweeper.errors import SweeperError
from sweeper.hparams import Hparams, HparamsError, load_hparams
from sweeper.uncertainty import refusal_message, rounding_refusal

SCHEMA_NAME = "sweeper.hparams"
SCHEMA_VERSION = 1
TABLE_FORMATS = ("json", "yaml", "csv", "parquet")


class ExportError(SweeperError):
    """Bad targets file, fit file or option combination; the message is one line for the user."""


@dataclass(frozen=True)
class Target:
    """One run to predict for: N non-embedding parameters, D tokens, sequence length."""

    name: str
    params: float
    tokens: float
    seq_len: int


def _positive(raw: object, where: str) -> float:
    # yaml reads "7e9" as a string (YAML 1.1 wants a dot), so numbers go through float().
    try:
        value = float(raw) if not isinstance(raw, bool) else math.nan  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ExportError(f"{where}: expected a positive finite number, got {raw!r}")
    return value


def _whole(raw: object, where: str) -> int:
    value = _positive(raw, where)
    if value != int(value):
        raise ExportError(f"{where}: expected a whole number of tokens, got {raw!r}")
    return int(value)


def load_targets(path: str | Path) -> list[Target]:
    """Read TARGETS.yaml: a list of mappings with keys name, params, tokens, seq_len
    (exactly these; numbers may be written 7e9). Raises ExportError naming the entry."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(f"targets file not found: {path}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ExportError(f"cannot read {path}: {str(error).splitlines()[0]}") from None
    if not isinstance(data, list) or not data:
        raise ExportError(f"{path}: expected a non-empty YAML list of targets")
    targets: list[Target] = []
    wanted = {"name", "params", "tokens", "seq_len"}
    for index, entry in enumerate(data):
        where = f"{path}: target [{index}]"
        if not isinstance(entry, dict):
            raise ExportError(f"{where}: expected a mapping with keys {sorted(wanted)}")
        missing, unknown = wanted - entry.keys(), entry.keys() - wanted
        if missing or unknown:
            raise ExportError(f"{where}: missing {sorted(missing)}, unknown {sorted(map(str, unknown))}")
        target = Target(
            str(entry["name"]),
            _positive(entry["params"], f"{where}.params"),
            _positive(entry["tokens"], f"{where}.tokens"),
            _whole(entry["seq_len"], f"{where}.seq_len"),
        )
        if not target.name or entry["name"] is None:
            raise ExportError(f"{where}.name: must be non-empty")
        targets.append(target)
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ExportError(f"{path}: target names must be distinct")
    return targets


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def proxy_schedule(hp: Hparams, given: dict[str, Any] | None = None) -> dict[str, Any]:
    """The schedule the proxies trained with: fit.json's ``schedule`` when present, else the
    ``schedule`` of ``recipe.yaml`` in fit.json's folder (where ``sweeper submit`` saves it),
    else ``given`` (the user's ``export --schedule ...``, for fits that recorded none; refused
    when the fit records one, since the lr was fitted under that one).
    Returns kind, warmup_fraction, warmup_steps, min_lr_ratio, decay_fraction and ``source``."""
    unknown = {
        "kind": "unknown",
        "warmup_fraction": None,
        "warmup_steps": None,
        "min_lr_ratio": None,
        "decay_fraction": None,
        "source": None,
    }
    schedule, source = hp.document.get("schedule"), "fit.json"
    if not isinstance(schedule, dict) and hp.path is not None:
        recipe_path = Path(hp.path).parent / "recipe.yaml"
        try:
            schedule = (yaml.safe_load(recipe_path.read_text(encoding="utf-8")) or {}).get("schedule")
            source = str(recipe_path)
        except (OSError, yaml.YAMLError, AttributeError):
            schedule = None
    from sweeper.recipe import Schedule  # pydantic only; no ray/torch

    if given:
        needed = (
            ["--warmup-steps or --warmup-fraction"]
            if given.get("warmup_steps") is None and given.get("warmup_fraction") is None
            else []
        )
        needed += [
            f"--{key.replace('_', '-')}"
            for key in {"cosine": ["min_lr_ratio"], "wsd": ["min_lr_ratio", "decay_fraction"]}.get(
                str(given.get("kind")), []
            )
            if given.get(key) is None
        ]
        if needed:  # no silent defaults: the target's schedule must be the proxies', stated
            raise ExportError(f"--schedule {given.get('kind')} needs {', '.join(needed)}")
        if isinstance(schedule, dict):
            raise ExportError(
                f"the fit records the proxies' schedule ({source}: {schedule}); the lr"
                " was fitted under it, so --schedule and its options are refused"
            )
        from pydantic import ValidationError

        try:
            parsed = Schedule.model_validate(given)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'schedule'}: {e['msg']}" for e in error.errors()
            )
            raise ExportError(f"--schedule options: {problems}") from None
        return {**parsed.model_dump(), "source": "export options"}
    if not isinstance(schedule, dict):
        return unknown
    # Fill the recipe's defaults (sweeper.recipe.Schedule) for keys a hand-written file omits.
    try:
        parsed = Schedule.model_validate(schedule)
    except ValueError:
        return unknown
    return {**parsed.model_dump(), "source": source}


def _warmup_steps(schedule: dict[str, Any], steps: int) -> int | None:
    """The target's warmup steps, counted as the proxies counted theirs (a fixed count, or the
    fraction of the target's own steps); None when the proxies' schedule is unknown."""
    if schedule["kind"] == "unknown":
        return None
    from sweeper.trainspec import ScheduleSettings, warmup_steps_of  # stdlib only

    names = [f.name for f in dataclasses.fields(ScheduleSettings)]
    return warmup_steps_of(ScheduleSettings(**{n: schedule[n] for n in names if n in schedule}), steps)


def _round_to_multiple(value: float, multiple: int) -> int:
    return max(multiple, multiple * round(value / multiple))


def build_record(
    hp: Hparams,
    target: Target,
    fit_sha256: str,
    round_to: int = 1,
    force: bool = False,
    schedule: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One table record for ``target`` (see the module docstring for the contract).
    Refused (ExportError) as ``Hparams.predict`` refuses, and when rounding to ``round_to``
    moves the batch more than 2x; ``force`` carries each reason as a FORCED warning."""
    if round_to < 1:
        raise ExportError("--round-to must be a positive integer")
    try:
        p = hp.predict(target.params, target.tokens, target.seq_len, force=force)
    except HparamsError as error:
        raise ExportError(f"target {target.name}: {error}") from None
    schedule = proxy_schedule(hp, schedule)
    exact = p.batch_size_tokens / target.seq_len
    sequences = _round_to_multiple(exact, round_to)
    tokens_used = sequences * target.seq_len
    rounding = rounding_refusal(p.batch_size_tokens, sequences, target.seq_len) if round_to > 1 else None
    if rounding and not force:
        raise ExportError(f"target {target.name}: {refusal_message([rounding])}")
    if rounding:
        p.warnings.insert(0, f"FORCED: {rounding}")
    lr_iv, b_iv, s_iv = p.lr_interval, p.batch_size_tokens_interval, p.batch_size_sequences_interval
    # Steps as the proxies counted them (sweeper.plan.make_trial): D over the batch, rounded.
    steps = max(1, round(target.tokens / tokens_used))
    warmup = _warmup_steps(schedule, steps)
    rng = hp.range
    return {
        "schema_version": SCHEMA_VERSION,
        "name": target.name,
        "params": target.params,
        "tokens": target.tokens,
        "seq_len": target.seq_len,
        "lr": p.lr,
        "lr_low": lr_iv[0] if lr_iv else None,  # null: the law's interval is undetermined
        "lr_high": lr_iv[1] if lr_iv else None,
        "batch_size_tokens": p.batch_size_tokens,
        "batch_size_tokens_low": b_iv[0] if b_iv else None,
        "batch_size_tokens_high": b_iv[1] if b_iv else None,
        "batch_size_sequences": sequences,
        "batch_size_sequences_low": s_iv[0] if s_iv else None,
        "batch_size_sequences_high": s_iv[1] if s_iv else None,
        "batch_size_sequences_exact": exact,
        "batch_round_to": round_to,
        "batch_size_tokens_used": tokens_used,
        "batch_rounding_change": tokens_used / p.batch_size_tokens - 1.0,
        "steps": steps,
        "schedule": schedule["kind"],
        "warmup_fraction": schedule["warmup_fraction"],
        "warmup_steps": warmup,
        "min_lr_ratio": schedule["min_lr_ratio"],
        "decay_fraction": schedule["decay_fraction"],
        "schedule_source": schedule["source"],
        "loss": p.loss,
        "loss_low": p.loss_interval[0] if p.loss_interval else None,
        "loss_high": p.loss_interval[1] if p.loss_interval else None,
        "interval_level": 0.95,
        "extrapolation_params": p.extrapolation_n_params,
        "extrapolation_tokens": p.extrapolation_tokens,
        "warnings": "; ".join(p.warnings),
        "forced": bool(p.forced) or bool(rounding),
        "fit_sha256": fit_sha256,
        "fit_created_at": hp.document.get("created_at"),
        "sweep": hp.document.get("sweep"),
        "estimator": p.estimator,
        "lr_law": hp.document["lr_law"].get("formula"),
        "batch_law": hp.document["batch_law"].get("formula"),
        "fitted_params_min": rng["n_params_min"],
        "fitted_params_max": rng["n_params_max"],
        "fitted_tokens_min": rng["tokens_min"],
        "fitted_tokens_max": rng["tokens_max"],
        "fitted_seq_len_min": rng.get("seq_len_min"),
        "fitted_seq_len_max": rng.get("seq_len_max"),
        # The Power scheduler for this target (null unless the fit has its law): lr(n) =
        # min(power_lr_max, B * power_a * n^power_b), B in tokens, n the tokens seen.
        "power_a": p.power_schedule["a"] if p.power_schedule else None,
        "power_b": p.power_schedule["b"] if p.power_schedule else None,
        "power_lr_max": p.power_schedule["lr_max"] if p.power_schedule else None,
    }


def build_records(
    fit_json: str | Path,
    targets: list[Target],
    round_to: int = 1,
    force: bool = False,
    schedule: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Records for every target, from the fit at ``fit_json`` (a fit.json or its folder)."""
    try:
        hp = load_hparams(fit_json)
    except HparamsError as error:
        raise ExportError(str(error)) from None
    assert hp.path is not None  # load_hparams records the file it read
    digest = sha256_of(Path(hp.path))
    return [build_record(hp, target, digest, round_to, force, schedule) for target in targets]


# Column types of the Parquet table: explicit, so an all-null column (no loss law) keeps its
# type instead of becoming pyarrow's "null" type that other readers choke on.
_STRING_COLUMNS = {
    "name",
    "schedule",
    "schedule_source",
    "warnings",
    "fit_sha256",
    "fit_created_at",
    "sweep",
    "estimator",
    "lr_law",
    "batch_law",
}
_INT_COLUMNS = {
    "schema_version",
    "seq_len",
    "batch_size_sequences",
    "batch_size_sequences_low",
    "batch_size_sequences_high",
    "batch_round_to",
    "batch_size_tokens_used",
    "steps",
    "warmup_steps",
    "fitted_seq_len_min",
    "fitted_seq_len_max",
}


def _document(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": SCHEMA_NAME, "schema_version": SCHEMA_VERSION, "records": records}


def _json_safe(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def render_table(records: list[dict[str, Any]], fmt: str) -> str | bytes:
    """The table in ``fmt`` (json, yaml, csv: text; parquet: bytes)."""
    if fmt == "json":
        clean = [{k: _json_safe(v) for k, v in r.items()} for r in records]
        return json.dumps(_document(clean), indent=2) + "\n"
    if fmt == "yaml":
        clean = [{k: _json_safe(v) for k, v in r.items()} for r in records]
        return yaml.safe_dump(_document(clean), sort_keys=False)
    if fmt == "csv":
        # repr-exact floats (csv writes str(float), which round-trips) and empty for null.
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(records[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in records)
        return buffer.getvalue()
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        fields = [
            pa.field(
                k,
                pa.string()
                if k in _STRING_COLUMNS
                else pa.int64()
                if k in _INT_COLUMNS
                else pa.bool_()
                if k == "forced"
                else pa.float64(),
            )
            for k in records[0]
        ]
        schema = pa.schema(fields, metadata={"kind": SCHEMA_NAME, "schema_version": str(SCHEMA_VERSION)})
        table = pa.Table.from_pylist(records, schema=schema)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        return sink.getvalue().to_pybytes()
    raise ExportError(f"unknown table format {fmt!r} (one of {', '.join(TABLE_FORMATS)})")


def read_table(path: str | Path) -> list[dict[str, Any]]:
    """Read back any table format written by ``render_table`` (by file extension)."""
    path = Path(path)
    suffix = path.suffix.lower().lstrip(".")
    if suffix == "json":
        return json.loads(path.read_text())["records"]
    if suffix in ("yaml", "yml"):
        return yaml.safe_load(path.read_text())["records"]
    if suffix == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if suffix == "csv":
        with path.open(newline="") as stream:
            return list(csv.DictReader(stream))
    raise ExportError(f"{path}: unknown table extension")


__all__ = [
    "ExportError",
    "SCHEMA_NAME",
    "SCHEMA_VERSION",
    "TABLE_FORMATS",
    "Target",
    "build_record",
    "build_records",
    "load_targets",
    "proxy_schedule",
    "read_table",
    "render_table",
    "sha256_of",
]
