"""Recipe: the typed description of a sweep (pydantic v2), loaded from YAML.

A recipe is the only input of a sweep. Every field carries a description with its unit;
unknown keys are errors (``extra="forbid"``) because a misspelt key silently ignored is a
sweep run with the wrong settings. ``load_recipe`` turns every problem into a
``RecipeError`` whose lines each name the field path and what was expected, so the CLI can
print them without a traceback.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sweeper.errors import SweeperError


class RecipeError(SweeperError):
    """A recipe that cannot be used. ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelShape(_Strict):
    """One rung of the proxy ladder: a decoder-only transformer shape."""

    d_model: int = Field(gt=0, description="Width of the residual stream (hidden size).")
    n_layers: int = Field(gt=0, description="Number of transformer blocks.")
    n_heads: int = Field(gt=0, description="Attention heads per block; must divide d_model.")
    seq_len: int = Field(64, gt=0, description="Context length in tokens of every training sequence.")
    vocab_size: int = Field(
        256, gt=1, description="Vocabulary size; 256 is the byte-level default (text sources)."
    )
    mlp_ratio: int = Field(4, gt=0, description="MLP hidden width as a multiple of d_model.")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelShape:
        if self.d_model % self.n_heads != 0:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        return self

    @property
    def name(self) -> str:
        return f"d{self.d_model}-l{self.n_layers}-h{self.n_heads}-s{self.seq_len}-v{self.vocab_size}"

    @property
    def n_params_nonembedding(self) -> int:
        """N as Step Law and DeepSeek use it: weights of the blocks (attention, MLP, norms) and
        the final norm, excluding token/position embeddings and the (tied) output head."""
        d, f = self.d_model, self.mlp_ratio * self.d_model
        attention = 4 * d * d  # qkv + output projection, no biases
        mlp = 2 * d * f
        norms = 2 * d
        return self.n_layers * (attention + mlp + norms) + d

    @property
    def n_params_total(self) -> int:
        """All trainable parameters: non-embedding + token and position embeddings (the output
        head is tied to the token embedding)."""
        return self.n_params_nonembedding + self.vocab_size * self.d_model + self.seq_len * self.d_model

    @property
    def flops_per_token_nonembedding(self) -> float:
        """DeepSeek LLM's M: non-embedding FLOPs per token for a forward+backward pass,
        72 n_layer d^2 + 12 n_layer d l_seq (their eq. 2 with the MLP ratio 4 folded in)."""
        d, L, s = self.d_model, self.n_layers, self.seq_len
        return 6.0 * (self.n_params_nonembedding - d) + 12.0 * L * d * s


# Upper bounds that turn an absurd request into a refusal instead of a hang: a proxy sweep of
# more trials than this, a log grid of more points, or a budget of more tokens than any
# pre-training run has used is a typo (1e9 for 1e3), not a plan.
MAX_TRIALS = 100_000
MAX_GRID_POINTS = 1_000
MAX_TOKENS = 1e14


class TokenBudgets(_Strict):
    """Training tokens D of each run. Give exactly one of ``absolute`` or ``per_param``."""

    absolute: list[float] | None = Field(
        None, description="Token budgets D in tokens, the same for every model shape."
    )
    per_param: list[float] | None = Field(
        None,
        description="Token budgets as tokens per non-embedding parameter (D = ratio * N), "
        "so each shape gets its own D.",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> TokenBudgets:
        given = [v for v in (self.absolute, self.per_param) if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'absolute' or 'per_param'")
        values = given[0]
        if not values:
            raise ValueError("needs at least one token budget")
        if any(not math.isfinite(v) or v <= 0 for v in values):
            raise ValueError("token budgets must be positive numbers")
        if len(set(values)) != len(values):
            raise ValueError("token budgets must be distinct")
        if self.absolute is not None and max(values) > MAX_TOKENS:
            raise ValueError(f"token budget {max(values):.3g} is above the limit of {MAX_TOKENS:.0e} tokens")
        return self

    def for_shape(self, shape: ModelShape) -> list[int]:
        if self.absolute is not None:
            return [int(round(v)) for v in self.absolute]
        assert self.per_param is not None
        return [int(round(r * shape.n_params_nonembedding)) for r in self.per_param]


class LogGrid(_Strict):
    """A log-spaced grid from ``min`` to ``max`` (both included) with ``count`` points."""

    min: float = Field(gt=0, description="Smallest value.")
    max: float = Field(gt=0, description="Largest value.")
    count: int = Field(
        ge=2,
        le=MAX_GRID_POINTS,
        description=f"Number of points, log-spaced, at least 2, at most {MAX_GRID_POINTS}.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> LogGrid:
        if not (math.isfinite(self.min) and math.isfinite(self.max)):
            raise ValueError("min and max must be finite numbers")
        if not self.min < self.max:
            raise ValueError(f"min ({self.min}) must be smaller than max ({self.max})")
        distinct = len(set(self.values()))
        if distinct != self.count:
            # Values are rounded to 6 significant digits (for stable trial ids); a grid that
            # collapses there would run fewer trials than it says.
            raise ValueError(
                f"{self.count} points from {self.min:g} to {self.max:g} give only "
                f"{distinct} distinct values at 6 significant digits; use fewer points "
                "or a wider range"
            )
        return self

    def values(self) -> list[float]:
        ratio = math.log(self.max / self.min) / (self.count - 1)
        # Rounded to 6 significant digits so that the same grid always hashes the same.
        return [float(f"{self.min * math.exp(i * ratio):.6g}") for i in range(self.count)]


def _positive_distinct(values: list[float], what: str) -> list[float]:
    if not values:
        raise ValueError(f"{what} needs at least one value")
    if any(not math.isfinite(v) or v <= 0 for v in values):
        raise ValueError(f"{what} values must be positive numbers")
    if len(set(values)) != len(values):
        raise ValueError(f"{what} values must be distinct")
    return sorted(values)


class LearningRates(_Strict):
    """Peak learning rates to sweep: either a log grid or an explicit list."""

    grid: LogGrid | None = Field(None, description="Log-spaced grid of peak learning rates.")
    values: list[float] | None = Field(None, description="Explicit peak learning rates.")

    @model_validator(mode="after")
    def _exactly_one(self) -> LearningRates:
        if (self.grid is None) == (self.values is None):
            raise ValueError("give exactly one of 'grid' or 'values'")
        if self.values is not None:
            _positive_distinct(self.values, "learning-rate")
        return self

    def all(self) -> list[float]:
        return self.grid.values() if self.grid is not None else sorted(self.values or [])


class Rung(ModelShape):
    """One rung of the ladder as the recipe lists it: its shape and, optionally, its own
    learning rates. The optimal lr moves with model size (about 8x over the demo's 20x in
    N), so one grid wide enough for every rung spends most of each rung's runs far from its
    optimum; a grid per rung can sit around each rung's own."""

    learning_rates: LearningRates | None = Field(
        None, description="This rung's peak learning rates (default: the recipe's learning_rates)."
    )

    @property
    def shape(self) -> ModelShape:
        """The shape alone: what cells, trial ids and the trainer see."""
        return ModelShape(**self.model_dump(exclude={"learning_rates"}))


DEFAULT_WARMUP_STEPS = 100  # see Schedule.warmup_steps for the measurements behind it


class Schedule(_Strict):
    """Learning-rate schedule. The learning rate of the sweep is the schedule's peak."""

    kind: Literal["cosine", "constant", "wsd", "power"] = Field(
        "cosine",
        description="cosine: linear warmup then cosine decay to min_lr_ratio*peak; constant: "
        "linear warmup then flat; wsd: warmup, stable at peak, linear decay over decay_fraction; "
        "power (the Power scheduler): lr(n) = min(peak, B * a * n^b) with B the batch in tokens "
        "and n the tokens seen, after a linear warmup, then the wsd decay.",
    )
    a: float | None = Field(
        None,
        gt=0,
        description="power only: the prefactor a of lr = B * a * n^b (B in tokens, "
        "n in tokens), as `sweeper fit` reports it for a WSD sweep.",
    )
    b: float | None = Field(
        None,
        allow_inf_nan=False,
        description="power only: the exponent b of lr = B * a * n^b (negative for a decaying law).",
    )
    warmup_fraction: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="Share of the run's steps spent in linear warmup (0..1); "
        "replaces warmup_steps when given. Within one cell it gives small batches more warmup "
        "steps than large ones (steps scale as 1/B), which biases the batch comparison.",
    )
    warmup_steps: int | None = Field(
        DEFAULT_WARMUP_STEPS,
        ge=0,
        description="Linear warmup as a fixed number of optimizer steps, "
        "the same for every batch size and token budget (a run shorter than this warms up over all "
        "its steps). The default, 100, is supported by measured proxies: 80 warmup steps beat 20 "
        "(optimal lr 2-4x higher, seed spread 10x lower) and about 117 beat 469 on a 2,344-step run.",
    )
    min_lr_ratio: float = Field(
        0.1, ge=0, le=1, description="Final learning rate as a fraction of the peak (cosine, wsd)."
    )
    decay_fraction: float = Field(
        0.2, gt=0, le=1, description="Share of the run's steps spent decaying (wsd and power)."
    )

    @model_validator(mode="before")
    @classmethod
    def _one_warmup(cls, data: object) -> object:
        # A fraction replaces the default count; both given is ambiguous, so it is refused.
        if isinstance(data, dict) and data.get("warmup_fraction") is not None:
            if data.get("warmup_steps") is not None:
                raise ValueError("give one of warmup_steps or warmup_fraction, not both")
            data = {**data, "warmup_steps": None}
        return data

    @model_validator(mode="after")
    def _fits(self) -> Schedule:
        if self.warmup_steps is None and self.warmup_fraction is None:
            raise ValueError("give one of warmup_steps or warmup_fraction")
        if self.kind == "power" and (self.a is None or self.b is None):
            raise ValueError("kind 'power' needs its law's a and b")
        if self.kind != "power" and (self.a is not None or self.b is not None):
            raise ValueError("a and b are only for kind 'power'")
        if self.kind in ("wsd", "power") and (self.warmup_fraction or 0.0) + self.decay_fraction > 1:
            raise ValueError("warmup_fraction + decay_fraction must not exceed 1")
        return self


class Parametrization(_Strict):
    """How weights are initialised and how their learning rates scale with width."""

    kind: Literal["standard", "mup"] = Field(
        "standard",
        description="standard: GPT-2/nanoGPT initialisation, one learning rate for every weight; "
        "mup: the maximal update parametrization for Adam (hidden matrices' init variance and "
        "learning rate divided by the width multiplier d_model / base_width, readout logits "
        "multiplied by 1 / multiplier, attention scaled by 1 / head_dim), under which the "
        "optimal learning rate is meant to stay put as the width grows.",
    )
    base_width: int | None = Field(
        None,
        gt=0,
        description="mup only: the width at which mup equals the standard "
        "parametrization (default: the smallest d_model of the ladder).",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_word(cls, data: object) -> object:
        # `parametrization: mup` is the short form of `parametrization: {kind: mup}`.
        return {"kind": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _base_width_for_mup(self) -> Parametrization:
        if self.kind == "standard" and self.base_width is not None:
            raise ValueError("base_width is only for kind 'mup'")
        return self


class Optimizer(_Strict):
    """AdamW settings shared by every trial."""

    beta1: float = Field(0.9, ge=0, lt=1, description="AdamW beta1.")
    beta2: float = Field(0.95, ge=0, lt=1, description="AdamW beta2.")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    weight_decay: float = Field(0.1, ge=0, description="Decoupled weight decay (on matrices only).")
    grad_clip: float = Field(1.0, ge=0, description="Max global gradient norm; 0 disables clipping.")


class DataSource(_Strict):
    """Where training tokens come from."""

    source: Literal["builtin", "text", "tokens"] = Field(
        "builtin",
        description="builtin: the Python standard library's own sources (no network, bytes); "
        "text: a UTF-8 text file read as bytes; tokens: a nanoGPT-style flat .bin of token ids.",
    )
    path: str | None = Field(None, description="File for source text or tokens.")
    dtype: Literal["uint16", "uint32"] = Field("uint16", description="Token id type of a .bin file.")
    val_fraction: float = Field(
        0.1, gt=0, lt=0.5, description="Share of the stream (its tail) held out for validation."
    )
    max_bytes: int = Field(
        4_000_000,
        gt=0,
        description="Cap on the builtin corpus size in bytes (keeps it the same "
        "on every machine of one Python version).",
    )

    @model_validator(mode="after")
    def _path_needed(self) -> DataSource:
        if self.source == "builtin":
            if self.path is not None:
                raise ValueError("path is only for source 'text' or 'tokens'")
        elif not self.path:
            raise ValueError(f"source '{self.source}' needs a path")
        elif not Path(self.path).expanduser().is_file():
            raise ValueError(f"data file not found: {self.path}")
        return self


class Resources(_Strict):
    """What one trial asks of the cluster (Ray resources)."""

    cpus: float = Field(1, gt=0, description="CPU cores per trial (also the torch thread count).")
    gpus: float = Field(0, ge=0, description="GPUs per trial; fractions let trials share a GPU.")
    max_retries: int = Field(2, ge=0, description="Times a trial is retried when its worker process dies.")
    memory_gb: float | None = Field(
        None,
        gt=0,
        description="Memory per trial in GiB, reserved from Ray's scheduler; a recipe "
        "whose largest trial is estimated to need more is refused before anything runs.",
    )


class Evaluation(_Strict):
    """How and when a trial measures itself."""

    every_steps: int = Field(
        0, ge=0, description="Measure validation loss every this many steps (0: only at the end)."
    )
    every_tokens: int | None = Field(
        None,
        gt=0,
        description="Measure validation loss every this many training tokens instead "
        "(rounded to whole steps of each run's batch), so the runs of one cell are measured at the "
        "same points whatever their batch size; replaces every_steps.",
    )
    val_batches: int = Field(8, gt=0, description="Validation batches per measurement.")
    divergence_factor: float = Field(
        1.5,
        gt=1,
        description="A run is diverged once its smoothed train loss exceeds this "
        "multiple of its initial loss (or any loss is NaN/inf). The smoothing averages over a "
        "fixed number of tokens, the same at every batch size (see train/monitor.py).",
    )


class Search(_Strict):
    """How the sweep chooses its trials: every grid point, or law-guided (see docs/adaptive.md)."""

    kind: Literal["grid", "adaptive"] = Field(
        "grid",
        description="grid: every lr x batch point of every cell; adaptive: the laws fitted "
        "on the cells already finished place a small window in each next cell.",
    )
    budget: float = Field(
        0.25, gt=0, le=1, description="adaptive: share of the full grid's runs the sweep may use."
    )
    max_runs_per_cell: int | None = Field(
        None, ge=5, description="adaptive: cap on one cell's runs (default: a share of the budget)."
    )
    window: int = Field(
        1,
        ge=1,
        description="adaptive: arm of the first window around the predicted optimum, in "
        "grid steps (widened up to twice this where the law's interval is wide).",
    )
    lookahead: int = Field(
        2,
        ge=0,
        description="adaptive: how many cells may start before the cells ranked below them "
        "finish (keeps the cluster full; 0 places every cell by all the cells before it).",
    )
    estimator: Literal["smooth", "plateau"] = Field(
        "smooth", description="adaptive: the fitter's estimator whose laws place the windows."
    )


class PredictionTarget(_Strict):
    """A run to predict settings for once the laws are fitted (`sweeper report` shows them)."""

    name: str = Field(min_length=1, description="A name for the target, e.g. 1b.")
    params: float = Field(gt=0, description="N: non-embedding parameters of the target.")
    tokens: float = Field(gt=0, description="D: training tokens of the target.")
    seq_len: int = Field(gt=0, description="Sequence length of the target, in tokens.")


class Recipe(_Strict):
    """A whole sweep: the proxy ladder, the grids, and how each trial trains."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Name of the sweep; the default run folder is runs/<name>.",
    )
    models: list[Rung] = Field(min_length=1, description="The proxy ladder.")
    tokens: TokenBudgets = Field(description="Token budgets D per shape.")
    learning_rates: LearningRates | None = Field(
        None,
        description="Peak learning rates to sweep, for every model that lists none of its own "
        "(required unless each model has learning_rates).",
    )
    batch_sizes: list[int] = Field(
        min_length=1, description="Batch sizes to sweep, in sequences of the shape's seq_len."
    )
    schedule: Schedule = Field(default_factory=Schedule, description="Learning-rate schedule.")
    optimizer: Optimizer = Field(default_factory=Optimizer, description="AdamW settings.")
    parametrization: Parametrization = Field(
        default_factory=Parametrization, description="standard or mup (with its base width)."
    )
    data: DataSource = Field(default_factory=DataSource, description="Training data.")
    seeds: list[int] = Field([0], min_length=1, description="Seeds; each is a separate trial.")
    resources: Resources = Field(default_factory=Resources, description="Per-trial resources.")
    evaluation: Evaluation = Field(default_factory=Evaluation, description="Measurement.")
    output: str | None = Field(None, description="Run folder (default runs/<name>).")
    targets: list[PredictionTarget] = Field(
        [],
        description="Runs to predict lr and batch size for; `sweeper report` shows the "
        "predictions (they do not change what the sweep trains).",
    )
    fuse: Literal["auto", "off"] | int = Field(
        "auto",
        description="Train trials that differ only in learning rate or token budget as one fused "
        "model of K members in one task: 'auto' (K up to 24 of one model size and batch, capped by "
        "memory), 'off', or K >= 1.",
    )
    search: Search = Field(default_factory=Search, description="How trials are chosen.")
    max_failed_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of failed trials (exceptions, dead workers) the sweep "
        "tolerates before `sweeper submit` exits non-zero; diverged runs are data, not failures.",
    )

    @field_validator("batch_sizes")
    @classmethod
    def _batches(cls, values: list[int]) -> list[int]:
        if any(v <= 0 for v in values):
            raise ValueError("batch sizes must be positive")
        if len(set(values)) != len(values):
            raise ValueError("batch sizes must be distinct")
        return sorted(values)

    @field_validator("fuse", mode="before")
    @classmethod
    def _fuse_yaml_words(cls, value: object) -> object:
        # YAML 1.1 reads a bare `off`/`no` as False and `on`/`yes` as True.
        if value is False:
            return "off"
        if value is True:
            return "auto"
        return value

    @field_validator("fuse")
    @classmethod
    def _fuse(cls, value: str | int) -> str | int:
        if isinstance(value, int) and value < 1:
            raise ValueError("fuse must be 'auto', 'off' or a member count >= 1")
        return value

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, values: list[int]) -> list[int]:
        if len(set(values)) != len(values):
            raise ValueError("seeds must be distinct")
        return values

    @model_validator(mode="after")
    def _every_model_has_learning_rates(self) -> Recipe:
        if self.learning_rates is None:
            bare = [rung.name for rung in self.models if rung.learning_rates is None]
            if bare:
                raise ValueError(
                    "learning_rates: give them for the whole recipe or on every model "
                    f"(none for {', '.join(bare)})"
                )
        return self

    @model_validator(mode="after")
    def _plan_size(self) -> Recipe:
        budgets = self.tokens.absolute or self.tokens.per_param or []
        lrs = sum(len(self.learning_rates_for(rung)) for rung in self.models)
        trials = len(budgets) * lrs * len(self.batch_sizes) * len(self.seeds)
        if trials > MAX_TRIALS:
            raise ValueError(
                f"the plan has {trials} trials (models x token budgets x learning rates x "
                f"batch sizes x seeds); the limit is {MAX_TRIALS}"
            )
        return self

    @model_validator(mode="after")
    def _data_fits_vocab(self) -> Recipe:
        if self.data.source != "tokens":
            small = [m.name for m in self.models if m.vocab_size < 256]
            if small:
                raise ValueError(f"byte-level data needs vocab_size >= 256 (shapes {', '.join(small)})")
        return self

    @property
    def shapes(self) -> list[ModelShape]:
        """The ladder's shapes, smallest-first as listed."""
        return [rung.shape for rung in self.models]

    def learning_rates_for(self, shape: ModelShape) -> list[float]:
        """The peak learning rates swept at ``shape``: its rung's own, else the recipe's. A
        shape is known by its name (the plan refuses two rungs that share one)."""
        for rung in self.models:
            if rung.name == shape.name:
                grid = rung.learning_rates or self.learning_rates
                assert grid is not None  # _every_model_has_learning_rates
                return grid.all()
        raise KeyError(f"no model {shape.name} in recipe {self.name}")

    @property
    def mup_base_width(self) -> int | None:
        """The μP base width every trial uses (None in the standard parametrization)."""
        if self.parametrization.kind != "mup":
            return None
        return self.parametrization.base_width or min(shape.d_model for shape in self.models)

    def run_dir(self, override: str | Path | None = None) -> Path:
        return Path(override or self.output or Path("runs") / self.name)


def _field_path(location: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in location:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in ("function-after", "function-before") or "[" in str(item):
            continue  # pydantic's internal validator names, not fields
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(recipe)"


def format_validation_error(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        path = _field_path(tuple(item["loc"]))
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (not a recipe field)"
        elif item["type"] == "missing":
            message = "required field is missing"
        problems.append(f"{path}: {message}")
    return problems


def parse_recipe(data: object, source: str = "recipe") -> Recipe:
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise RecipeError([f"{source}: expected a YAML mapping of recipe fields, got {kind}"])
    try:
        return Recipe.model_validate(data)
    except ValidationError as error:
        raise RecipeError(format_validation_error(error)) from None


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file; raises RecipeError with one line per problem."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError([f"{path}: recipe file not found"])
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RecipeError([f"{path}: not valid YAML ({first_line})"]) from None
    return parse_recipe(data, str(path))
