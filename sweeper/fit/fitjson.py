"""fit.json: the fitted laws as a file that `sweeper.hparams` (numpy + json only) can use.

Written with runfolder.atomic_write_json: a reader never sees a half-written fit, and a
failed fit leaves the previous file untouched. The layout is
documented in docs/fitting.md ("fit.json"); ``FIT_SCHEMA_VERSION`` changes whenever a field changes
meaning or disappears (new fields do not bump it).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from sweeper.fit.laws import PowerLawFit
from sweeper.runfolder import atomic_write_json
from sweeper.uncertainty import discarded_share, undetermined_reasons

FIT_SCHEMA_VERSION = 1
FIT_KIND = "sweeper.fit"


def law_to_dict(law: PowerLawFit, *, with_samples: bool, level: float = 0.95) -> dict[str, Any]:
    names = (law.prefactor_name, *law.exponent_names)
    values = [math.exp(law.coef[0]), *law.coef[1:].tolist()]
    interval = law.interval(level)
    intervals = [[math.exp(interval[0, 0]), math.exp(interval[0, 1])]] + interval[1:].tolist()
    undetermined = undetermined_reasons(law.bootstrap, law.n_degenerate, law.r2, level)
    if undetermined:  # stored as unknown, never as a precise range
        intervals = [None] * len(names)
    out: dict[str, Any] = {
        "formula": law.formula(),
        "target": law.target,
        "variables": list(law.variables),
        "coefficients": dict(zip(names, values)),
        "intervals": dict(zip(names, intervals)),
        "interval_level": level,
        "log_coefficients": law.coef.tolist(),
        "r2": law.r2,
        "n_observations": law.n_observations,
        "n_cells": law.n_cells,
        "n_bootstrap": int(len(law.bootstrap)),
        "n_degenerate": law.n_degenerate,
        "discarded_share": discarded_share(len(law.bootstrap), law.n_degenerate),
        "determined": not undetermined,
        "undetermined": undetermined,
        "bootstrap_scheme": law.scheme,
    }
    if with_samples:
        # Rows: (log prefactor, exponents...) of each valid replicate; prediction intervals.
        out["bootstrap_log_coefficients"] = np.round(law.bootstrap, 10).tolist()
    return out


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null rather than as invalid JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        return _clean(value.item())
    return value


def write_fit_json(path: Path, document: dict[str, Any]) -> Path:
    """``document`` as strict JSON (NaN and inf written as null), atomically."""
    return atomic_write_json(path, _clean(document))
