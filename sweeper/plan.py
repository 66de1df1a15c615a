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

from sweeper.recipe import DataSource, Evaluation, ModelShape, Optimizer, Recipe, Schedule


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
    def warmup_steps(self) -> int:
        """Warmup steps this run takes (the schedule's count, capped at ``steps``)."""
        return self.schedule.warmup_steps_of(self.steps)

    @property
    def eval_every_steps(self) -> int:
        """Steps between validation measurements (0: only the final one)."""
        return self.evaluation.every_steps_for(self.batch_size_tokens)

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
    cells: list[Cell] = []
    seen: set[str] = set()
    for shape in recipe.models:
        for budget in recipe.tokens.for_shape(shape):
            cell = Cell(cell_id_for(shape, budget), shape, budget)
            if cell.cell_id not in seen:
                seen.add(cell.cell_id)
                cells.append(cell)
    return cells


def make_trial(
    recipe: Recipe, cell: Cell, lr: float, batch_size: int, seed: int, data_identity: str
) -> TrialSpec:
    steps = max(1, round(cell.tokens_budget / (batch_size * cell.shape.seq_len)))
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
    return trials


__all__ = [
    "Cell",
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
