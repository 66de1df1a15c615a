"""Fitted hyperparameters: read fit.json, predict lr and batch size for a target run.

Pure numpy + json (no scipy, matplotlib, ray or torch): a training script can import it to
read its settings. Intervals are percentiles of the law evaluated at the target for every
bootstrap replicate stored in fit.json (replicates resample cells and runs within cells),
so they widen as the target moves away from the fitted (N, D) range.

    hp = load_hparams("runs/demo/fit.json")
    p = hp.predict(n_params=5e6, tokens=1e8, seq_len=256)
    p.lr, p.batch_size_tokens, p.batch_size_sequences, p.lr_interval, p.warnings
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sweeper.errors import SweeperError

SUPPORTED_SCHEMA_VERSIONS = (1,)
INTERVAL_LEVEL = 0.95


class HparamsError(SweeperError):
    """fit.json missing, unreadable or of an unknown schema version; or a bad target."""


@dataclass
class Prediction:
    """Settings for one target run. ``*_interval`` are 95% bootstrap intervals; the
    ``extrapolation_*`` factors say how many times beyond the fitted range the target lies
    (1.0 = inside it)."""

    n_params: float
    tokens: float
    seq_len: int
    lr: float
    batch_size_tokens: float
    batch_size_sequences: int
    lr_interval: tuple[float, float]
    batch_size_tokens_interval: tuple[float, float]
    batch_size_sequences_interval: tuple[int, int]
    extrapolation_n_params: float
    extrapolation_tokens: float
    estimator: str
    flops_per_token: float | None = None
    loss: float | None = None
    loss_interval: tuple[float, float] | None = None
    lr_interval_width_in_range: float | None = None  # hi/lo of the lr interval mid-range
    # The Power scheduler's parameters for this target (fits of WSD sweeps): a, b, lr_max,
    # lr_at_end = min(lr_max, B * a * D^b) at the predicted batch; None when not fitted.
    power_schedule: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def lr_interval_width(self) -> float:
        return self.lr_interval[1] / self.lr_interval[0]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        out["lr_interval_width"] = self.lr_interval_width
        return out


def _factor(value: float, low: float, high: float) -> float:
    """How many times beyond [low, high] ``value`` lies (1.0 inside)."""
    return max(1.0, value / high, low / value)


@dataclass
class Law:
    variables: tuple[str, ...]
    coef: np.ndarray  # (log prefactor, exponents...)
    bootstrap: np.ndarray  # (R, p)

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> Law:
        samples = np.asarray(entry.get("bootstrap_log_coefficients") or [], dtype=float)
        coef = np.asarray(entry["log_coefficients"], dtype=float)
        return cls(tuple(entry["variables"]), coef, samples.reshape(-1, coef.size))

    def log_value(self, logs: dict[str, float]) -> tuple[float, np.ndarray]:
        x = np.array([1.0] + [logs[v] for v in self.variables])
        samples = self.bootstrap @ x if len(self.bootstrap) else np.array([self.coef @ x])
        return float(self.coef @ x), samples


class Hparams:
    """A loaded fit.json. ``document`` is the raw JSON."""

    def __init__(self, document: dict[str, Any], path: Path | None = None):
        version = document.get("schema_version")
        if version not in SUPPORTED_SCHEMA_VERSIONS:
            raise HparamsError(f"{path or 'fit'}: unsupported fit.json schema_version {version!r}")
        self.document = document
        self.path = path
        self.estimator = str(document.get("estimator"))
        self.lr_law = Law.from_dict(document["lr_law"])
        self.batch_law = Law.from_dict(document["batch_law"])
        self.range = document["data_range"]

    def _flops(self, n_params: float, flops_per_token: float | None, warnings: list[str]) -> float | None:
        if flops_per_token is not None:
            return float(flops_per_token)
        if "C" not in self.lr_law.variables + self.batch_law.variables:
            return None
        model = self.document.get("flops_model")
        if not model:
            raise HparamsError("this fit uses compute C = M*D: give flops_per_token (M)")
        warnings.append("flops per token (M) not given: estimated from N with the fitted"
                        " relation of the proxies; pass it for an exact compute")
        return math.exp(model["log_k"]) * n_params ** model["exponent"]

    def _logs(self, n_params: float, tokens: float, flops: float | None) -> dict[str, float]:
        logs = {"N": math.log(n_params), "D": math.log(tokens)}
        if flops is not None:
            logs["C"] = math.log(flops * tokens)
        return logs

    def predict(self, n_params: float, tokens: float, seq_len: int,
                flops_per_token: float | None = None) -> Prediction:
        """lr and batch size (tokens and sequences of ``seq_len``) for a target run of
        ``n_params`` non-embedding parameters (N) trained on ``tokens`` tokens (D)."""
        if not (n_params > 0 and tokens > 0 and seq_len >= 1):
            raise HparamsError("params, tokens and seq_len must be positive")
        warnings: list[str] = []
        flops = self._flops(n_params, flops_per_token, warnings)
        logs = self._logs(n_params, tokens, flops)
        tail = 50.0 * (1.0 - INTERVAL_LEVEL)

        def interval(samples: np.ndarray) -> tuple[float, float]:
            lo, hi = np.exp(np.percentile(samples, [tail, 100.0 - tail]))
            return float(lo), float(hi)

        log_lr, lr_samples = self.lr_law.log_value(logs)
        log_b, b_samples = self.batch_law.log_value(logs)
        lr_iv, b_iv = interval(lr_samples), interval(b_samples)
        b_tokens = math.exp(log_b)
        rng = self.range
        fn = _factor(n_params, rng["n_params_min"], rng["n_params_max"])
        fd = _factor(tokens, rng["tokens_min"], rng["tokens_max"])
        # The interval's width at the middle of the fitted range, to show how much of the
        # target's width is extrapolation.
        mid_n = math.sqrt(rng["n_params_min"] * rng["n_params_max"])
        mid_d = math.sqrt(rng["tokens_min"] * rng["tokens_max"])
        mid_flops = self._flops(mid_n, None, []) if flops is not None else None
        _, mid_samples = self.lr_law.log_value(self._logs(mid_n, mid_d, mid_flops))
        mid_iv = interval(mid_samples)
        width_in_range = mid_iv[1] / mid_iv[0]
        for name, value, factor, low, high in (
            ("N", n_params, fn, rng["n_params_min"], rng["n_params_max"]),
            ("D", tokens, fd, rng["tokens_min"], rng["tokens_max"]),
        ):
            if factor > 1.0:
                warnings.append(
                    f"{name} = {value:.3g} is {factor:.3g}x beyond the fitted range"
                    f" [{low:.3g}, {high:.3g}]: the lr interval spans a factor"
                    f" {lr_iv[1] / lr_iv[0]:.3g} (mid-range: {width_in_range:.3g})"
                )
        if not rng["seq_len_min"] <= seq_len <= rng["seq_len_max"]:
            warnings.append(f"seq_len {seq_len} is outside the fitted seq_len range"
                            f" [{rng['seq_len_min']}, {rng['seq_len_max']}]")
        loss, loss_iv = self._loss(n_params, tokens)
        power = self._power_schedule(tokens, b_tokens)
        return Prediction(
            n_params=float(n_params), tokens=float(tokens), seq_len=int(seq_len),
            lr=math.exp(log_lr), batch_size_tokens=b_tokens,
            batch_size_sequences=max(1, round(b_tokens / seq_len)),
            lr_interval=lr_iv, batch_size_tokens_interval=b_iv,
            batch_size_sequences_interval=(max(1, round(b_iv[0] / seq_len)),
                                           max(1, round(b_iv[1] / seq_len))),
            extrapolation_n_params=fn, extrapolation_tokens=fd, estimator=self.estimator,
            flops_per_token=flops, loss=loss, loss_interval=loss_iv,
            lr_interval_width_in_range=width_in_range, power_schedule=power, warnings=warnings,
        )

    def _power_schedule(self, tokens: float, batch_tokens: float) -> dict[str, Any] | None:
        """The Power scheduler (Shen et al. 2024) for a target of ``tokens`` tokens at
        ``batch_tokens`` tokens per step: lr(n) = min(lr_max, B * a * n^b)."""
        law = self.document.get("power_scheduler")
        if not law:
            return None
        a, b, lr_max = float(law["a"]), float(law["b"]), float(law["lr_max"])
        intervals = law.get("intervals") or {}
        return {
            "kind": "power", "a": a, "b": b, "a_interval": intervals.get("a"), "b_interval": intervals.get("b"),
            "lr_max": lr_max, "lr_at_end": min(lr_max, batch_tokens * a * tokens**b),
            "formula": "lr(n) = min(lr_max, B * a * n^b), B in tokens, n = tokens seen",
        }

    def _loss(self, n_params: float, tokens: float) -> tuple[float | None, tuple[float, float] | None]:
        law = self.document.get("loss_law")
        if not law:
            return None, None

        def value(theta: np.ndarray) -> np.ndarray:
            log_e, log_a, log_b, a, b = theta.T
            return (np.exp(log_e) + np.exp(log_a - a * math.log(n_params))
                    + np.exp(log_b - b * math.log(tokens)))

        point = float(value(np.asarray(law["parameters"], dtype=float)))
        samples = np.asarray(law.get("bootstrap_parameters") or [], dtype=float).reshape(-1, 5)
        if not len(samples):
            return point, None
        lo, hi = np.percentile(value(samples), [2.5, 97.5])
        return point, (float(lo), float(hi))


def load_hparams(path: str | Path) -> Hparams:
    """Load a fit.json written by ``sweeper fit``. Raises HparamsError on a bad file."""
    path = Path(path)
    if path.is_dir():
        path = path / "fit.json"
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise HparamsError(f"fit file not found: {path}") from None
    except (OSError, json.JSONDecodeError) as error:
        raise HparamsError(f"cannot read {path}: {error}") from None
    if not isinstance(document, dict) or document.get("kind") != "sweeper.fit":
        raise HparamsError(f"{path} is not a sweeper fit.json")
    try:
        return Hparams(document, path)
    except (KeyError, TypeError, ValueError) as error:
        raise HparamsError(f"{path}: malformed fit.json ({error})") from None


__all__ = ["Hparams", "HparamsError", "Prediction", "load_hparams"]
