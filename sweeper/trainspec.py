"""What a trainer is given: one trial's settings as plain, frozen dataclasses.

The trainer (train/) takes these and nothing of the recipe's pydantic models, so it runs
where only torch (and numpy) is installed: a GPU machine runs its tests and benchmarks
without the rest of sweeper's dependencies. Each class mirrors the recipe model of the same
role field by field (recipe.ModelShape, Schedule, Optimizer, DataSource, Evaluation, and
plan.TrialSpec); ``as_train_spec`` reads a planned TrialSpec into them by field name, and a
test holds the field lists equal.

``fusion_key`` lives here, next to the fields it names, so that the driver (which groups
trials, plan.fused_group_size) and the fused trainer (which checks a group) decide
fusability with one function.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar


@dataclass(frozen=True)
class Shape:
    """A decoder-only transformer shape (recipe.ModelShape)."""

    d_model: int
    n_layers: int
    n_heads: int
    seq_len: int = 64
    vocab_size: int = 256
    mlp_ratio: int = 4


@dataclass(frozen=True)
class ScheduleSettings:
    """Learning-rate schedule (recipe.Schedule); the trial's lr is its peak."""

    kind: str = "cosine"  # cosine, constant, wsd or power
    warmup_fraction: float | None = None  # replaces warmup_steps when given
    warmup_steps: int | None = 100  # recipe.DEFAULT_WARMUP_STEPS
    min_lr_ratio: float = 0.1
    decay_fraction: float = 0.2
    a: float | None = None  # power only: lr = min(peak, B * a * n^b), B and n in tokens
    b: float | None = None


@dataclass(frozen=True)
class OptimizerSettings:
    """AdamW settings (recipe.Optimizer)."""

    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0


@dataclass(frozen=True)
class DataSettings:
    """Where training tokens come from (recipe.DataSource)."""

    source: str = "builtin"  # builtin, text or tokens
    path: str | None = None
    dtype: str = "uint16"
    val_fraction: float = 0.1
    max_bytes: int = 4_000_000


@dataclass(frozen=True)
class EvaluationSettings:
    """How and when a trial measures itself (recipe.Evaluation)."""

    every_steps: int = 0
    every_tokens: int | None = None  # replaces every_steps when given
    val_batches: int = 8
    divergence_factor: float = 1.5


@dataclass(frozen=True)
class TrainSpec:
    """One proxy training, everything the trainer needs (plan.TrialSpec's trainer view)."""

    trial_id: str
    shape: Shape
    lr: float  # peak learning rate
    batch_size: int  # sequences of shape.seq_len
    steps: int  # optimizer steps
    seed: int
    tokens_budget: int = 0  # the cell's D (steps * batch tokens when not given)
    data_identity: str = ""
    schedule: ScheduleSettings = ScheduleSettings()
    optimizer: OptimizerSettings = OptimizerSettings()
    data: DataSettings = DataSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    mup_base_width: int | None = None  # None: standard parametrization; else μP's base width

    @property
    def batch_size_tokens(self) -> int:
        return self.batch_size * self.shape.seq_len

    @property
    def tokens(self) -> int:
        """Tokens trained on: steps * batch tokens."""
        return self.steps * self.batch_size_tokens


def warmup_steps_of(schedule: Any, total_steps: int) -> int:
    """Warmup length of a ``total_steps`` run under ``schedule`` (recipe.Schedule or
    ScheduleSettings): the fixed count capped at the run, else the fraction of the run,
    rounded. The one rule: the plan, the trainer, the results and the export all use it."""
    if schedule.warmup_steps is not None:
        return min(schedule.warmup_steps, total_steps)
    return int(round((schedule.warmup_fraction or 0.0) * total_steps))


def eval_every_steps(evaluation: Any, batch_tokens: int) -> int:
    """Steps between validation measurements for a run of ``batch_tokens`` per step under
    ``evaluation`` (recipe.Evaluation or EvaluationSettings): ``every_tokens`` rounded to
    whole steps when given (the same points of every batch size of a cell), else
    ``every_steps``."""
    if evaluation.every_tokens is not None:
        return max(1, round(evaluation.every_tokens / batch_tokens))
    return int(evaluation.every_steps)


Settings = TypeVar("Settings")


def _read(cls: type[Settings], value: Any) -> Settings:
    """``value`` (a recipe model or already ``cls``) as ``cls``, field by field."""
    if isinstance(value, cls):
        return value
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]  # cls is a dataclass
    return cls(**{name: getattr(value, name) for name in names})


def as_train_spec(spec: Any) -> TrainSpec:
    """A TrainSpec as is; a planned trial (plan.TrialSpec, or anything with its fields) read
    into one. Reads attributes only, so no pydantic import is needed here."""
    if isinstance(spec, TrainSpec):
        return spec
    return TrainSpec(
        trial_id=spec.trial_id,
        shape=_read(Shape, spec.shape),
        lr=float(spec.lr),
        batch_size=int(spec.batch_size),
        steps=int(spec.steps),
        seed=int(spec.seed),
        tokens_budget=int(
            getattr(spec, "tokens_budget", 0) or spec.steps * spec.batch_size * spec.shape.seq_len
        ),
        data_identity=spec.data_identity,
        schedule=_read(ScheduleSettings, spec.schedule),
        optimizer=_read(OptimizerSettings, spec.optimizer),
        data=as_data_settings(spec.data),
        evaluation=_read(EvaluationSettings, spec.evaluation),
        mup_base_width=getattr(spec, "mup_base_width", None),
    )


def as_data_settings(data: Any) -> DataSettings:
    """recipe.DataSource (or DataSettings) as DataSettings."""
    return _read(DataSettings, data)


def fusion_key(spec: Any) -> tuple[Any, ...]:
    """Trials (TrialSpec or TrainSpec) with equal keys can train as members of one fused
    group (train/fused.py): the same model shape, batch, data order and optimizer settings,
    differing only in learning rate, schedule and token budget (a shorter member leaves the
    group after its last step)."""
    return (
        _read(Shape, spec.shape),
        getattr(spec, "mup_base_width", None),  # μP and standard members never share a model
        spec.batch_size,
        spec.seed,
        as_data_settings(spec.data),
        spec.data_identity,
        _read(OptimizerSettings, spec.optimizer),
        _read(EvaluationSettings, spec.evaluation),
    )


def budget_line_key(spec: Any) -> tuple[Any, ...]:
    """Trials (TrialSpec or TrainSpec) with equal keys differ only in token budget: the
    budgets of one run (fusion_key plus learning rate and schedule), which WSD branching
    trains as one (train/branching.py; plan.whole_runs keeps them in one task)."""
    return (*fusion_key(spec), float(spec.lr), _read(ScheduleSettings, spec.schedule))


__all__ = [
    "DataSettings",
    "EvaluationSettings",
    "OptimizerSettings",
    "ScheduleSettings",
    "Shape",
    "TrainSpec",
    "as_data_settings",
    "as_train_spec",
    "budget_line_key",
    "eval_every_steps",
    "fusion_key",
    "warmup_steps_of",
]
