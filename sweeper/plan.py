"""Plan: recipe -> cells (N, D) and the trial specs of each cell, with content-hash ids.

A trial id is a hash of everything that determines the run's outcome (shape, D, lr, B,
schedule, optimizer, seed, evaluation, data identity) and nothing else, so the same trial
planned twice, in another sweep or after a crash, gets the same id: a rerun skips it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from sweeper.errors import SweeperError
from sweeper.recipe import MAX_TOKENS, DataSource, Evaluation, ModelShape, Optimizer, Recipe, Schedule


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
    def label(self) -> str:
        """Short human name, used for Ray task names and progress lines."""
        return f"{self.cell_id} lr={self.lr:.3g} B={self.batch_size}"


def fusion_key(spec: TrialSpec) -> tuple:
    """Trials with equal keys can train as members of one fused group (train/fused.py): the
    same model shape, batch, data order and optimizer settings, differing only in learning
    rate, schedule and token budget (a shorter member leaves the group after its last step).
    Pure, so the driver can group without importing torch."""
    return (
        spec.shape,
        spec.batch_size,
        spec.seed,
        spec.data,
        spec.data_identity,
        spec.optimizer,
        spec.evaluation,
    )


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
    for shape in recipe.models:
        for budget in recipe.tokens.for_shape(shape):
            if budget > MAX_TOKENS:
                raise PlanError(f"tokens: shape {shape.name} gets a budget of {budget:.3g} tokens, above "
                                f"the limit of {MAX_TOKENS:.0e}")
            cell = Cell(cell_id_for(shape, budget), shape, budget)
            earlier = seen.get(cell.cell_id)
            if earlier is not None:
                if earlier.shape != shape:
                    raise PlanError(f"models: two shapes are both named {shape.name} (they differ only in "
                                    "mlp_ratio, which cells do not tell apart)")
                if earlier.tokens_budget == budget:
                    raise PlanError(f"models: shape {shape.name} is listed twice")
                raise PlanError(f"tokens: budgets {earlier.tokens_budget} and {budget} give one cell "
                                f"{cell.cell_id} (cells tell budgets apart at 3 significant digits); "
                                "make them differ there")
            seen[cell.cell_id] = cell
            cells.append(cell)
    return cells


def make_trial(
    recipe: Recipe, cell: Cell, lr: float, batch_size: int, seed: int, data_identity: str
) -> TrialSpec:
    batch_tokens = batch_size * cell.shape.seq_len
    if cell.tokens_budget < batch_tokens:
        raise PlanError(f"tokens: budget {cell.tokens_budget} of cell {cell.cell_id} is smaller than one "
                        f"batch ({batch_size} x seq_len {cell.shape.seq_len} = {batch_tokens} tokens)")
    steps = max(1, round(cell.tokens_budget / batch_tokens))
    determining = {
        "shape": cell.shape.model_dump(),
        "tokens_budget": cell.tokens_budget,
        "steps": steps,
        "lr": float(lr),
        "batch_size": batch_size,
        "schedule": recipe.schedule.model_dump(),
        "optimizer": recipe.optimizer.model_dump(),
        "seed": seed,
        "data_identity": data_identity,
        "val_fraction": recipe.data.val_fraction,
        "evaluation": recipe.evaluation.model_dump(),
    }
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
    trials = [
        make_trial(recipe, cell, lr, batch_size, seed, data_identity)
        for cell in plan_cells(recipe)
        for batch_size in recipe.batch_sizes
        for lr in recipe.learning_rates.all()
        for seed in recipe.seeds
    ]
    # Ids hash what determines a run, so equal ids mean the recipe lists one run twice.
    first_of: dict[str, TrialSpec] = {}
    for trial in trials:
        earlier = first_of.setdefault(trial.trial_id, trial)
        if earlier is not trial:
            raise PlanError(f"trials {earlier.label} and {trial.label} are the same run (one trial id); "
                            "remove the repeated value")
    return trials


__all__ = [
    "Cell",
    "PlanError",
    "TrialSpec",
    "cell_id_for",
    "estimate_group_memory_bytes",
    "estimate_trial_memory_bytes",
    "fusion_key",
    "make_trial",
    "plan_cells",
    "plan_trials",
    "trial_identity",
]
