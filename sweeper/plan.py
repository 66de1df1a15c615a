"""Plan: recipe -> cells (N, D) and the trial specs of each cell, with content-hash ids.

A trial id is a hash of everything that determines the run's outcome (shape, D, lr, B,
schedule, optimizer, seed, evaluation, data identity) and nothing else, so the same trial
planned twice, in another sweep or after a crash, gets the same id: a rerun skips it.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from sweeper.errors import SweeperError
from sweeper.recipe import MAX_TOKENS, DataSource, Evaluation, ModelShape, Optimizer, Recipe, Schedule
from sweeper.trainspec import budget_line_key, eval_every_steps, fusion_key, warmup_steps_of


class PlanError(SweeperError):
    """A recipe whose plan would not be what it says (two cells or trials with one id, a
    budget smaller than one batch); refused before anything is written."""


class TrialSpec(BaseModel):
    """Everything a worker needs to run one proxy training, and nothing it must look up."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    trial_id: str
    sweep: str
    cell_id: str
    shape: ModelShape
    tokens_budget: int  # D, training tokens asked for
    lr: float  # peak learning rate
    batch_size: int  # sequences of shape.seq_len
    steps: int  # optimizer steps, round(D / (batch_size * seq_len))
    schedule: Schedule
    optimizer: Optimizer
    seed: int
    data: DataSource
    data_identity: str  # hash of the token stream (see train.data)
    evaluation: Evaluation
    mup_base_width: int | None = None  # None: standard parametrization; else μP's base width

    @property
    def parametrization(self) -> str:
        return "standard" if self.mup_base_width is None else "mup"

    @property
    def batch_size_tokens(self) -> int:
        return self.batch_size * self.shape.seq_len

    @property
    def tokens(self) -> int:
        """Tokens actually trained on: steps * batch tokens (D rounded to whole steps)."""
        return self.steps * self.batch_size_tokens

    @property
    def n_params(self) -> int:
        return self.shape.n_params_nonembedding

    @property
    def warmup_steps(self) -> int:
        """Warmup steps this run takes (the schedule's count, capped at ``steps``)."""
        return warmup_steps_of(self.schedule, self.steps)

    @property
    def eval_every_steps(self) -> int:
        """Steps between validation measurements (0: only the final one)."""
        return eval_every_steps(self.evaluation, self.batch_size_tokens)

    @property
    def label(self) -> str:
        """Short human name, used for Ray task names and progress lines."""
        return f"{self.cell_id} lr={self.lr:.3g} B={self.batch_size}"


def trial_identity(fields: dict) -> str:
    """sha256 of the canonical JSON of the fields that determine a run, first 16 hex digits."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=float)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Cell:
    """One (model shape, token budget) point of the ladder: a cell of the fit."""

    cell_id: str
    shape: ModelShape
    tokens_budget: int

    @property
    def n_params(self) -> int:
        return self.shape.n_params_nonembedding


def cell_id_for(shape: ModelShape, tokens_budget: int) -> str:
    return f"{shape.name}-D{tokens_budget:.3g}".replace("+", "")


def plan_cells(recipe: Recipe) -> list[Cell]:
    """One cell per (shape, budget). Two that would share a cell id are refused, not merged:
    a merged cell runs fewer trials than the recipe lists."""
    cells: list[Cell] = []
    seen: dict[str, Cell] = {}
    for shape in recipe.shapes:
        for budget in recipe.tokens.for_shape(shape):
            if budget > MAX_TOKENS:
                raise PlanError(
                    f"tokens: shape {shape.name} gets a budget of {budget:.3g} tokens, above "
                    f"the limit of {MAX_TOKENS:.0e}"
                )
            cell = Cell(cell_id_for(shape, budget), shape, budget)
            earlier = seen.get(cell.cell_id)
            if earlier is not None:
                if earlier.shape != shape:
                    raise PlanError(
                        f"models: two shapes are both named {shape.name} (they differ only in "
                        "mlp_ratio, which cells do not tell apart)"
                    )
                if earlier.tokens_budget == budget:
                    raise PlanError(f"models: shape {shape.name} is listed twice")
                raise PlanError(
                    f"tokens: budgets {earlier.tokens_budget} and {budget} give one cell "
                    f"{cell.cell_id} (cells tell budgets apart at 3 significant digits); "
                    "make them differ there"
                )
            seen[cell.cell_id] = cell
            cells.append(cell)
    return cells


def make_trial(
    recipe: Recipe, cell: Cell, lr: float, batch_size: int, seed: int, data_identity: str
) -> TrialSpec:
    batch_tokens = batch_size * cell.shape.seq_len
    if cell.tokens_budget < batch_tokens:
        raise PlanError(
            f"tokens: budget {cell.tokens_budget} of cell {cell.cell_id} is smaller than one "
            f"batch ({batch_size} x seq_len {cell.shape.seq_len} = {batch_tokens} tokens)"
        )
    steps = max(1, round(cell.tokens_budget / batch_tokens))
    determining = {
        "shape": cell.shape.model_dump(),
        "tokens_budget": cell.tokens_budget,
        "steps": steps,
        "lr": float(lr),
        "batch_size": batch_size,
        # exclude_none: a field added later at its neutral default (None) keeps old ids.
        "schedule": recipe.schedule.model_dump(exclude_none=True),
        "optimizer": recipe.optimizer.model_dump(),
        "seed": seed,
        "data_identity": data_identity,
        "val_fraction": recipe.data.val_fraction,
        "evaluation": recipe.evaluation.model_dump(),
    }
    if recipe.mup_base_width is not None:
        # Only when set, so that standard trials keep the ids they always had.
        determining["mup_base_width"] = recipe.mup_base_width
    return TrialSpec(
        trial_id=trial_identity(determining),
        sweep=recipe.name,
        cell_id=cell.cell_id,
        shape=cell.shape,
        tokens_budget=cell.tokens_budget,
        lr=float(lr),
        batch_size=batch_size,
        steps=steps,
        schedule=recipe.schedule,
        optimizer=recipe.optimizer,
        seed=seed,
        data=recipe.data,
        data_identity=data_identity,
        evaluation=recipe.evaluation,
        mup_base_width=recipe.mup_base_width,
    )


PROCESS_BYTES = 400 * 2**20  # Python and torch in one worker, paid once per task


def estimate_group_memory_bytes(spec: TrialSpec, members: int) -> int:
    """Peak memory of one task training ``members`` fused copies of ``spec``: the process
    once, the per-trial part (see estimate_trial_memory_bytes) per member."""
    return PROCESS_BYTES + members * (estimate_trial_memory_bytes(spec) - PROCESS_BYTES)


def estimate_trial_memory_bytes(spec: TrialSpec) -> int:
    """Peak memory of one fp32 trial, estimated: weights, gradients and AdamW's two moments
    (16 bytes per parameter), plus activations kept for the backward pass. Per layer and
    token a pre-norm block keeps about 34*d floats (norm inputs, q/k/v, attention output,
    MLP input and its 4d hidden before and after GELU); the logits and their gradient cost
    2*vocab floats per token. A 1.5x margin covers the allocator and temporaries; the
    process itself (Python, torch) adds about 400 MiB.
    """
    shape = spec.shape
    tokens_per_batch = spec.batch_size * shape.seq_len
    parameter_bytes = 16 * shape.n_params_total
    activation_floats = tokens_per_batch * (shape.n_layers * 34 * shape.d_model + 2 * shape.vocab_size)
    return int(PROCESS_BYTES + 1.5 * (parameter_bytes + 4 * activation_floats))


def plan_trials(recipe: Recipe, data_identity: str) -> list[TrialSpec]:
    """Every trial of the sweep: cells x learning rates x batch sizes x seeds."""
    cells = plan_cells(recipe)
    learning_rates = {cell.cell_id: recipe.learning_rates_for(cell.shape) for cell in cells}
    trials = [
        make_trial(recipe, cell, lr, batch_size, seed, data_identity)
        for cell in cells
        for batch_size in recipe.batch_sizes
        for lr in learning_rates[cell.cell_id]
        for seed in recipe.seeds
    ]
    # Ids hash what determines a run, so equal ids mean the recipe lists one run twice.
    first_of: dict[str, TrialSpec] = {}
    for trial in trials:
        earlier = first_of.setdefault(trial.trial_id, trial)
        if earlier is not trial:
            raise PlanError(
                f"trials {earlier.label} and {trial.label} are the same run (one trial id); "
                "remove the repeated value"
            )
    return trials


# ---- fusion policy: which trials share one task, how many (K), and the task's name ----
# Which: trainspec.fusion_key (the fused trainer checks its groups with the same function).
# The driver groups with these and never imports torch; train/fused.py trains such a group.


# The lr x budget family of one shape, batch and seed in one task where it fits: CPU time per
# trunk step of a WSD group (seq 16, 2 layers) went from 1.65 ms with 6 members to 2.45 ms
# with 18 at d_model 16 (half the cost per member), 3.5 -> 8.9 ms at d_model 72 (0.87x); on a
# GPU a group of 8 already trains 6-7x faster than its members one by one (docs/figures.md).
# Measured by benchmarks/fused_family.py.
MAX_AUTO_MEMBERS = 24
AUTO_GROUP_MEMORY_BYTES = 2 * 2**30  # a fused task's share when the recipe names no memory
# On a CPU, fusing pays only where per-operation overhead dominates a step, i.e. for small
# batches: benchmarks/trainer_throughput.py measured K=8 fused at 2.0-2.4x (d32) and
# 1.3-1.8x (d64) the sequential rate with 128-token batches, but 1.2x with 1024-token ones.
CPU_AUTO_FUSE_MAX_BATCH_TOKENS = 256


def fused_group_size(recipe: Recipe, specs: list[TrialSpec]) -> Callable[[TrialSpec], int]:
    """For each trial, K: the most trials its fused task may train, from ``recipe.fuse``.

    'auto' fuses the trials of one ``fusion_key`` (shape, batch, seed: the learning rates
    and token budgets of one model size), up to MAX_AUTO_MEMBERS while the group fits
    ``resources.memory_gb`` (or AUTO_GROUP_MEMORY_BYTES) — on GPUs always, on CPUs only for
    batches of at most CPU_AUTO_FUSE_MAX_BATCH_TOKENS, where it measured faster. An explicit
    K is taken as given; 'off' is K = 1.
    """
    if recipe.fuse == "off" or not specs:
        return lambda spec: 1
    if isinstance(recipe.fuse, int):
        fixed = recipe.fuse
        return lambda spec: fixed
    budget = recipe.resources.memory_gb * 2**30 if recipe.resources.memory_gb else AUTO_GROUP_MEMORY_BYTES
    on_gpu = recipe.resources.gpus > 0
    siblings = Counter(fusion_key(spec) for spec in specs)

    def members(spec: TrialSpec) -> int:
        if not on_gpu and spec.batch_size_tokens > CPU_AUTO_FUSE_MAX_BATCH_TOKENS:
            return 1
        count = min(MAX_AUTO_MEMBERS, siblings[fusion_key(spec)])
        while count > 1 and estimate_group_memory_bytes(spec, count) > budget:
            count -= 1
        return count

    return members


def whole_runs(members: Callable[[TrialSpec], int], specs: list[TrialSpec]) -> Callable[[TrialSpec], int]:
    """``members`` raised to the number of token budgets of each trial's run, so that WSD
    budgets that branch from one run always share its task (train/branching.py); the
    schedule hands such runs out whole (schedule.SweepStudy's ``line``)."""
    budgets = Counter(map(budget_line_key, specs))
    return lambda spec: max(members(spec), budgets[budget_line_key(spec)])


def task_name(specs: list[TrialSpec]) -> str:
    """The Ray task name of a single trial or a fused group (shown in the dashboard)."""
    if len(specs) == 1:
        return f"trial {specs[0].label}"
    lrs = ",".join(f"{s.lr:.3g}" for s in specs)
    cells = sorted({s.cell_id for s in specs})
    budgets = ",".join(f"{d:.0e}" for d in sorted({s.tokens_budget for s in specs}))
    where = cells[0] if len(cells) == 1 else f"{specs[0].shape.name} D={budgets}"
    return f"fused x{len(specs)} {where} B={specs[0].batch_size} lr={lrs}"


__all__ = [
    "Cell",
    "PlanError",
    "TrialSpec",
    "budget_line_key",
    "cell_id_for",
    "estimate_group_memory_bytes",
    "estimate_trial_memory_bytes",
    "fused_group_size",
    "make_trial",
    "plan_cells",
    "plan_trials",
    "task_name",
    "trial_identity",
    "whole_runs",
]
