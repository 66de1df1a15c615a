"""Shared fixtures: recipes as dicts, and the repository's paths."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
STEPLAW_CSV = REPO.parent / "shared" / "data" / "steplaw" / "moe_lr_bs_loss.csv"

MINIMAL_RECIPE = {
    "name": "tiny",
    "models": [{"d_model": 16, "n_layers": 1, "n_heads": 2, "seq_len": 16}],
    "tokens": {"absolute": [4096]},
    "learning_rates": {"grid": {"min": 1e-3, "max": 1e-2, "count": 2}},
    "batch_sizes": [4],
}


@pytest.fixture
def minimal_recipe() -> dict:
    return copy.deepcopy(MINIMAL_RECIPE)
