"""Fitted hyperparameters: read fit.json, predict lr and batch size for a target run.

Pure numpy + json (no scipy, matplotlib, ray or torch): a training script can import it to
read its settings. Intervals are percentiles of the law evaluated at the target for every
bootstrap replicate stored in fit.json (replicates resample cells and runs within cells),
so they widen as the target moves away from the fitted (N, D) range.

    hp = load_hparams("runs/demo/fit.json")
    p = hp.predict(n_params=5e6, tokens=1e8, seq_len=256)
    p.lr, p.batch_size_tokens, p.batch_size_sequences, p.lr_interval, p.warnings

A prediction is refused (``PredictionRefused``) when a law behind it is undetermined, the
target lies beyond the extrapolation limit, or rounding moves the batch more than 2x (see
``sweeper.uncertainty``); ``force=True`` returns it with each reason as a ``FORCED:`` warning.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sweeper.errors import SweeperError
from sweeper.uncertainty import EXTRAPOLATION_LIMIT, refusal_message, rounding_refusal, undetermined_reasons

SUPPORTED_SCHEMA_VERSIONS = (1,)
INTERVAL_LEVEL = 0.95


class HparamsError(SweeperError):
    """fit.json missing, unreadable or of an unknown schema version; or a bad target."""


class PredictionRefused(HparamsError):
    """The numbers would mislead (undetermined law, extrapolation past the limit, batch
    rounding > 2x); ``reasons`` lists why. ``force=True`` turns it into warnings."""

    def __init__(self, reasons: list[str]):
        super().__init__(refusal_message(reasons))
        self.reasons = reasons


@dataclass
class Prediction:
    """Settings for one target run. ``*_interval`` are 95% bootstrap intervals; the
    ``extrapolation_*`` factors say how many times beyond the fitted range the target lies
    (1.0 = inside it). An interval is None when the law's uncertainty is undetermined;
    ``forced`` lists the refusals that ``force=True`` overrode (each also a warning)."""

    n_params: float
    tokens: float
    seq_len: int
    lr: float
    batch_size_tokens: float
    batch_size_sequences: int
    lr_interval: tuple[float, float] | None
    batch_size_tokens_interval: tuple[float, float] | None
    batch_size_sequences_interval: tuple[int, int] | None
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
    forced: list[str] = field(default_factory=list)

    @property
    def lr_interval_width(self) -> float | None:
        """hi / lo of the lr interval; None when the interval is undetermined."""
        if self.lr_interval is None:
            return None
        return self.lr_interval[1] / self.lr_interval[0]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        out["lr_interval_width"] = self.lr_interval_width
        return out


def _non_finite(record: dict[str, Any]) -> list[str]:
    """Names of the float fields (and interval ends) of ``record`` that are inf or NaN."""
    bad = []
    for key, value in record.items():
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            bad.append(key)
    return sorted(bad)


def _factor(value: float, low: float, high: float) -> float:
    """How many times beyond [low, high] ``value`` lies (1.0 inside)."""
    return max(1.0, value / high, low / value)


@dataclass
class Law:
    variables: tuple[str, ...]
    coef: np.ndarray  # (log prefactor, exponents...)
    bootstrap: np.ndarray  # (R, p)
    undetermined: list[str] = field(default_factory=list)  # why its interval is unknown

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> Law:
        samples = np.asarray(entry.get("bootstrap_log_coefficients") or [], dtype=float)
        coef = np.asarray(entry["log_coefficients"], dtype=float)
        samples = samples.reshape(-1, coef.size)
        # Judged from the stored replicates, so older fit.json files get the same verdict.
        reasons = undetermined_reasons(samples, int(entry.get("n_degenerate") or 0), entry.get("r2"))
        return cls(tuple(entry["variables"]), coef, samples, reasons)

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
        for key in ("n_params_min", "n_params_max", "tokens_min", "tokens_max"):
            value = self.range[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise HparamsError(
                    f"{path or 'fit'}: malformed fit.json (data_range.{key} = {value!r}, "
                    "expected a positive number)"
                )

    def _flops(self, n_params: float, flops_per_token: float | None, warnings: list[str]) -> float | None:
        if flops_per_token is not None:
            return float(flops_per_token)
        if "C" not in self.lr_law.variables + self.batch_law.variables:
            return None
        model = self.document.get("flops_model")
        if not model:
            raise HparamsError("this fit uses compute C = M*D: give flops_per_token (M)")
        warnings.append(
            "flops per token (M) not given: estimated from N with the fitted"
            " relation of the proxies; pass it for an exact compute"
        )
        return math.exp(model["log_k"]) * n_params ** model["exponent"]

    def _logs(self, n_params: float, tokens: float, flops: float | None) -> dict[str, float]:
        logs = {"N": math.log(n_params), "D": math.log(tokens)}
        if flops is not None:
            logs["C"] = math.log(flops * tokens)
        return logs

    def predict(
        self,
        n_params: float,
        tokens: float,
        seq_len: int,
        flops_per_token: float | None = None,
        *,
        force: bool = False,
    ) -> Prediction:
        """lr and batch size (tokens and sequences of ``seq_len``) for a target run of
        ``n_params`` non-embedding parameters (N) trained on ``tokens`` tokens (D).

        Raises PredictionRefused (see the module docstring) unless ``force``."""
        for name, value in (("params", n_params), ("tokens", tokens), ("flops_per_token", flops_per_token)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise HparamsError(f"{name} must be a positive finite number, got {value!r}")
        if seq_len < 1:
            raise HparamsError(f"seq_len must be a positive integer, got {seq_len!r}")
        try:
            prediction = self._predict(n_params, tokens, seq_len, flops_per_token, force)
        except OverflowError:
            prediction = None
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
            if isinstance(error, HparamsError):
                raise
            raise HparamsError(
                f"{self.path or 'fit'}: malformed fit.json ({type(error).__name__}: {error})"
            ) from None
        # A law evaluated far outside its range can overflow; inf or NaN is never a setting.
        bad = ["overflow"] if prediction is None else _non_finite(prediction.to_dict())
        if bad:
            raise HparamsError(
                f"the fit gives no finite prediction at N={n_params:.3g}, D={tokens:.3g} "
                f"({', '.join(bad)} not finite): the target is too far from the fitted range"
            )
        assert prediction is not None
        return prediction

    def _predict(
        self, n_params: float, tokens: float, seq_len: int, flops_per_token: float | None, force: bool
    ) -> Prediction:
        warnings: list[str] = []
        refusals = [
            f"the {name} law is undetermined ({'; '.join(law.undetermined)}): widen the"
            " grid until it brackets each cell's optimum, or add cells"
            for name, law in (("lr", self.lr_law), ("batch size", self.batch_law))
            if law.undetermined
        ]
        flops = self._flops(n_params, flops_per_token, warnings)
        logs = self._logs(n_params, tokens, flops)
        tail = 50.0 * (1.0 - INTERVAL_LEVEL)

        def interval(samples: np.ndarray) -> tuple[float, float]:
            lo, hi = np.exp(np.percentile(samples, [tail, 100.0 - tail]))
            return float(lo), float(hi)

        log_lr, lr_samples = self.lr_law.log_value(logs)
        log_b, b_samples = self.batch_law.log_value(logs)
        lr_iv = None if self.lr_law.undetermined else interval(lr_samples)
        b_iv = None if self.batch_law.undetermined else interval(b_samples)
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
        width_in_range = mid_iv[1] / mid_iv[0] if lr_iv is not None else None
        for name, value, factor, low, high in (
            ("N", n_params, fn, rng["n_params_min"], rng["n_params_max"]),
            ("D", tokens, fd, rng["tokens_min"], rng["tokens_max"]),
        ):
            beyond = f"{name} = {value:.3g} is {factor:.3g}x beyond the fitted range [{low:.3g}, {high:.3g}]"
            if factor > EXTRAPOLATION_LIMIT:
                refusals.append(
                    f"{beyond}, past the {EXTRAPOLATION_LIMIT:g}x extrapolation limit:"
                    " fit proxies closer to the target"
                )
            elif factor > 1.0:
                spread = (
                    f"the lr interval spans a factor {lr_iv[1] / lr_iv[0]:.3g} (mid-range:"
                    f" {width_in_range:.3g})"
                    if lr_iv is not None and width_in_range
                    else "the lr interval is undetermined"
                )
                warnings.append(f"{beyond}: {spread}")
        if not rng["seq_len_min"] <= seq_len <= rng["seq_len_max"]:
            warnings.append(
                f"seq_len {seq_len} is outside the fitted seq_len range"
                f" [{rng['seq_len_min']}, {rng['seq_len_max']}]"
            )
        sequences = max(1, round(b_tokens / seq_len))
        rounding = rounding_refusal(b_tokens, sequences, seq_len)
        if rounding:
            refusals.append(rounding)
        if refusals and not force:
            raise PredictionRefused(refusals)
        loss, loss_iv = self._loss(n_params, tokens)
        power = self._power_schedule(tokens, b_tokens)
        return Prediction(
            n_params=float(n_params),
            tokens=float(tokens),
            seq_len=int(seq_len),
            lr=math.exp(log_lr),
            batch_size_tokens=b_tokens,
            batch_size_sequences=sequences,
            lr_interval=lr_iv,
            batch_size_tokens_interval=b_iv,
            batch_size_sequences_interval=None
            if b_iv is None
            else (max(1, round(b_iv[0] / seq_len)), max(1, round(b_iv[1] / seq_len))),
            extrapolation_n_params=fn,
            extrapolation_tokens=fd,
            estimator=self.estimator,
            flops_per_token=flops,
            loss=loss,
            loss_interval=loss_iv,
            lr_interval_width_in_range=width_in_range,
            power_schedule=power,
            warnings=[f"FORCED: {reason}" for reason in refusals] + warnings,
            forced=refusals,
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
            "kind": "power",
            "a": a,
            "b": b,
            "a_interval": intervals.get("a"),
            "b_interval": intervals.get("b"),
            "lr_max": lr_max,
            "lr_at_end": min(lr_max, batch_tokens * a * tokens**b),
            "formula": "lr(n) = min(lr_max, B * a * n^b), B in tokens, n = tokens seen",
        }

    def _loss(self, n_params: float, tokens: float) -> tuple[float | None, tuple[float, float] | None]:
        law = self.document.get("loss_law")
        if not law:
            return None, None

        def value(theta: np.ndarray) -> np.ndarray:
            log_e, log_a, log_b, a, b = theta.T
            return (
                np.exp(log_e) + np.exp(log_a - a * math.log(n_params)) + np.exp(log_b - b * math.log(tokens))
            )

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
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        reason = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
        raise HparamsError(f"cannot read {path}: not a JSON text ({reason})") from None
    if not isinstance(document, dict) or document.get("kind") != "sweeper.fit":
        raise HparamsError(f"{path} is not a sweeper fit.json")
    try:
        return Hparams(document, path)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        if isinstance(error, HparamsError):
            raise
        raise HparamsError(f"{path}: malformed fit.json ({type(error).__name__}: {error})") from None


__all__ = ["Hparams", "HparamsError", "Prediction", "PredictionRefused", "load_hparams"]
