"""The trainer runs with torch alone: plain dataclasses at its boundary (sweeper.trainspec),
no pydantic, Ray, Optuna or Parquet, so a GPU machine needs nothing else to train."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys

import pytest
from pydantic import BaseModel

from sweeper.plan import TrialSpec
from sweeper.recipe import DataSource, Evaluation, ModelShape, Optimizer, Schedule
from sweeper.trainspec import (
    DataSettings,
    EvaluationSettings,
    OptimizerSettings,
    ScheduleSettings,
    Shape,
    TrainSpec,
    as_train_spec,
)

from .conftest import build_specs

# Everything sweeper depends on besides torch and numpy (numpy comes with torch's wheels).
BLOCKED = ("pydantic", "ray", "optuna", "pyarrow", "pandas", "scipy", "matplotlib", "yaml", "click")

SCRIPT = f"""
import json, math, sys
for name in {BLOCKED!r}:
    sys.modules[name] = None  # any import of it now raises ImportError
from sweeper.train import run_fused, run_trial
from sweeper.trainspec import DataSettings, Shape, TrainSpec
shape = Shape(d_model=32, n_layers=1, n_heads=4, seq_len=32)
data = DataSettings(max_bytes=200_000)
specs = [TrainSpec(trial_id=f"t{{i}}", shape=shape, lr=lr, batch_size=4, steps=25, seed=0, data=data)
         for i, lr in enumerate((3e-3, 1e-2))]
single = run_trial(specs[0])
fused = run_fused(specs)
print(json.dumps({{
    "single": [single.status, single.final_val_loss, single.initial_loss, single.error],
    "fused": [[o.status, o.final_val_loss, o.initial_loss] for o in fused],
    "imported": sorted(name for name in {BLOCKED!r} if sys.modules.get(name) is not None),
}}))
"""


def test_trainer_runs_where_only_torch_is_installed() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["imported"] == []
    status, loss, initial, error = result["single"]
    assert status == "complete", error
    assert math.isfinite(loss) and loss < initial  # it learned something in 25 steps
    assert [member[0] for member in result["fused"]] == ["complete", "complete"]
    # The fused member with the single run's settings is the same computation (float rounding aside).
    assert result["fused"][0][1] == pytest.approx(loss, rel=1e-3)


MIRRORS = [
    (Shape, ModelShape),
    (ScheduleSettings, Schedule),
    (OptimizerSettings, Optimizer),
    (DataSettings, DataSource),
    (EvaluationSettings, Evaluation),
]


@pytest.mark.parametrize(("settings", "model"), MIRRORS, ids=[m.__name__ for _, m in MIRRORS])
def test_each_settings_class_mirrors_its_recipe_model(settings: type, model: type[BaseModel]) -> None:
    fields = {f.name: f for f in dataclasses.fields(settings)}
    assert set(fields) == set(model.model_fields)
    for name, info in model.model_fields.items():
        if not info.is_required():
            assert fields[name].default == info.default, name


def test_a_planned_trial_reads_into_a_train_spec() -> None:
    planned = build_specs(lrs=[1e-3], steps=5, evaluation={"every_steps": 2})[0]
    spec = as_train_spec(planned)
    assert set(f.name for f in dataclasses.fields(TrainSpec)) <= set(TrialSpec.model_fields)
    assert (spec.trial_id, spec.lr, spec.batch_size, spec.steps, spec.seed) == (
        planned.trial_id,
        planned.lr,
        planned.batch_size,
        planned.steps,
        planned.seed,
    )
    assert spec.shape.d_model == planned.shape.d_model and spec.evaluation.every_steps == 2
    assert spec.batch_size_tokens == planned.batch_size_tokens and spec.tokens == planned.tokens
    assert as_train_spec(spec) is spec
