"""A law-guided sweep on a real local Ray, end to end, and its replay: the trials a real
sweep chose are exactly those a replay of its own results chooses (proposals depend on
results only, never on timing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sweeper.recipe import load_recipe
from sweeper.replay import run_replay

pytestmark = pytest.mark.slow

RECIPE = {
    "name": "adaptive-smoke",
    # 3 shapes x 2 budgets = 6 cells, so the laws are fitted (after 4 cells) and place the rest.
    "models": [{"d_model": d, "n_layers": 1, "n_heads": 2, "seq_len": 32} for d in (16, 32, 48)],
    "tokens": {"absolute": [8000, 16000]},
    "learning_rates": {"grid": {"min": 0.003, "max": 0.024, "count": 4}},
    "batch_sizes": [4, 8],
    "schedule": {"kind": "cosine", "warmup_fraction": 0.1, "min_lr_ratio": 0.1},
    "evaluation": {"every_steps": 0, "val_batches": 4},
    "data": {"source": "builtin", "max_bytes": 1000000},
    "search": {"kind": "adaptive", "budget": 0.6, "lookahead": 1},
}


def test_adaptive_sweep_on_ray_and_its_replay_choose_the_same_trials(tmp_path: Path) -> None:
    recipe_file = tmp_path / "adaptive.yaml"
    recipe_file.write_text(yaml.safe_dump(RECIPE))
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "sweeper", "submit", str(recipe_file), "--out", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trials = pd.read_parquet(run_dir / "trials")
    grid = 6 * 4 * 2
    assert len(trials) <= 0.6 * grid  # the budget holds
    assert trials.cell_id.nunique() >= 4  # the ladder is walked, not one cell exhausted
    assert set(trials.status) <= {"complete", "diverged"}

    replayed = run_replay(run_dir, tmp_path / "replay", recipe=load_recipe(recipe_file))
    assert not replayed.missing  # every proposal of the replay was a trial the real sweep ran
    again = pd.read_parquet(tmp_path / "replay" / "trials")
    assert set(again.trial_id) == set(trials.trial_id)
