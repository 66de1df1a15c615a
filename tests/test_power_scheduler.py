"""The Power scheduler end to end: a real WSD sweep over batch sizes and token budgets on a
local Ray, fitted for the law's a and b, a target predicted with them, and a proxy trained
with ``schedule: {kind: power}`` using the fitted law."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import yaml

from sweeper.plan import plan_trials
from sweeper.recipe import parse_recipe
from sweeper.train import data_identity, run_trial

pytestmark = pytest.mark.slow

SHAPES = [
    {"d_model": 16, "n_layers": 1, "n_heads": 2, "seq_len": 32},
    {"d_model": 32, "n_layers": 1, "n_heads": 2, "seq_len": 32},
]
WSD_SWEEP = {
    "name": "wsd-power",
    "models": SHAPES,
    "tokens": {"absolute": [4000, 12000]},
    # Wide around where these tiny models learn best (~3e-3 to 1e-2), so that the optimum of
    # every (cell, batch) is bracketed whatever the machine's rounding.
    "learning_rates": {"grid": {"min": 0.001, "max": 0.1, "count": 5}},
    "batch_sizes": [2, 8],
    "schedule": {"kind": "wsd", "warmup_steps": 10, "decay_fraction": 0.2, "min_lr_ratio": 0.1},
    "evaluation": {"val_batches": 8},
    "data": {"source": "builtin", "max_bytes": 1000000},
}


def sweeper(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sweeper", *args], capture_output=True, text=True, timeout=600
    )


def test_wsd_sweep_fits_the_power_law_predicts_a_target_and_a_power_proxy_trains(tmp_path):
    recipe_path, run_dir = tmp_path / "wsd.yaml", tmp_path / "run"
    recipe_path.write_text(yaml.safe_dump(WSD_SWEEP))
    done = sweeper("submit", str(recipe_path), "--out", str(run_dir))
    assert done.returncode == 0, done.stderr[-2000:]

    fitted = sweeper("fit", str(run_dir), "--no-plots", "--bootstrap", "200")
    assert fitted.returncode == 0, fitted.stderr[-2000:]
    assert "Power scheduler law" in fitted.stdout
    law = json.loads((run_dir / "fit.json").read_text())["power_scheduler"]
    assert law["n_points"] >= 3 and law["n_cells"] >= 2
    assert math.isfinite(law["a"]) and law["a"] > 0 and math.isfinite(law["b"])
    assert law["lr_max"] == max(point["lr_opt"] for point in law["points"])

    # --force: this tiny sweep's batch law may be undetermined (every optimum at one batch),
    # which predict refuses; the Power schedule is what is checked here.
    predicted = sweeper(
        "predict",
        str(run_dir / "fit.json"),
        "--params",
        "5e4",
        "--tokens",
        "1e5",
        "--seq-len",
        "32",
        "--json",
        "--force",
    )
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    prediction = json.loads(predicted.stdout)
    power = prediction["power_schedule"]
    assert (power["a"], power["b"], power["lr_max"]) == (law["a"], law["b"], law["lr_max"])
    expected_end = min(law["lr_max"], prediction["batch_size_tokens"] * law["a"] * 1e5 ** law["b"])
    assert power["lr_at_end"] == pytest.approx(expected_end, rel=1e-9)

    # A proxy trained with the fitted law: the trial's lr is the schedule's cap (lr_max).
    recipe = parse_recipe(
        {
            **WSD_SWEEP,
            "name": "power-proxy",
            "models": SHAPES[:1],
            "tokens": {"absolute": [4000]},
            "learning_rates": {"values": [law["lr_max"]]},
            "batch_sizes": [2],
            "schedule": {
                "kind": "power",
                "a": law["a"],
                "b": law["b"],
                "warmup_steps": 10,
                "decay_fraction": 0.2,
            },
        }
    )
    (spec,) = plan_trials(recipe, data_identity(recipe.data))
    outcome = run_trial(spec)
    assert outcome.status == "complete" and math.isfinite(outcome.final_val_loss)
    assert outcome.final_val_loss < outcome.initial_loss
    decay_start = spec.steps - round(0.2 * spec.steps)
    stable = [point for point in outcome.curve if 10 < point.step <= decay_start]
    assert len(stable) > 10
    for point in stable:  # the stable phase follows the law, capped at lr_max
        law_lr = spec.batch_size_tokens * law["a"] * (point.step * spec.batch_size_tokens) ** law["b"]
        assert point.lr == pytest.approx(min(law["lr_max"], law_lr), rel=1e-9)
