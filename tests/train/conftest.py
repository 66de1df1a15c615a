"""Shared builders for trainer tests: real recipes, real plans, tiny models."""

from __future__ import annotations

from typing import Any

import pytest

from sweeper.plan import TrialSpec, plan_trials
from sweeper.recipe import parse_recipe
from sweeper.train import data_identity


def build_specs(
    *,
    lrs: list[float] = (1e-2,),
    d_model: int = 32,
    n_layers: int = 2,
    n_heads: int = 4,
    seq_len: int = 64,
    vocab_size: int = 256,
    batch_size: int = 16,
    steps: int = 40,
    seeds: list[int] = (0,),
    **recipe_fields: Any,
) -> list[TrialSpec]:
    """Trial specs of a one-cell recipe; ``steps`` optimizer steps each."""
    recipe = parse_recipe(
        {
            "name": "train-test",
            "models": [
                {
                    "d_model": d_model,
                    "n_layers": n_layers,
                    "n_heads": n_heads,
                    "seq_len": seq_len,
                    "vocab_size": vocab_size,
                }
            ],
            "tokens": {"absolute": [steps * batch_size * seq_len]},
            "learning_rates": {"values": list(lrs)},
            "batch_sizes": [batch_size],
            "seeds": list(seeds),
            **recipe_fields,
        }
    )
    return plan_trials(recipe, data_identity(recipe.data))


@pytest.fixture
def make_specs():
    return build_specs
