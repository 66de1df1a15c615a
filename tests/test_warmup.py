"""Warmup in steps: the recipe default, trial ids, the trials column, fit.json's schedule and
the exported warmup; and the other per-step settings made fair across batch sizes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from sweeper.export.table import build_record
from sweeper.fit.select import clean_trials
from sweeper.hparams import load_hparams
from sweeper.outcome import TrialOutcome
from sweeper.plan import plan_trials
from sweeper.recipe import DEFAULT_WARMUP_STEPS, RecipeError, parse_recipe
from sweeper.results import ResultSink, read_trials
from sweeper.train.monitor import ema_alpha
from sweeper.train.schedules import lr_table
from tests.conftest import MINIMAL_RECIPE
from tests.export.conftest import DATA


def recipe(**changes):
    return parse_recipe({**MINIMAL_RECIPE, "tokens": {"absolute": [16384]}, "batch_sizes": [1, 4], **changes})


def test_default_is_a_step_count_and_one_warmup_only() -> None:
    schedule = recipe().schedule
    assert schedule.warmup_steps == DEFAULT_WARMUP_STEPS and schedule.warmup_fraction is None
    given_fraction = recipe(schedule={"warmup_fraction": 0.05}).schedule
    assert given_fraction.warmup_steps is None and given_fraction.warmup_fraction == 0.05
    with pytest.raises(RecipeError, match="not both"):
        recipe(schedule={"warmup_fraction": 0.05, "warmup_steps": 10})


def test_one_cell_warms_up_the_same_steps_at_every_batch() -> None:
    by_batch = {spec.batch_size: spec for spec in plan_trials(recipe(), "data")}
    assert by_batch[1].steps == 4 * by_batch[4].steps  # 1/B steps in one cell
    assert by_batch[1].warmup_steps == by_batch[4].warmup_steps == DEFAULT_WARMUP_STEPS
    fraction = {s.batch_size: s for s in plan_trials(recipe(schedule={"warmup_fraction": 0.05}), "data")}
    assert fraction[1].warmup_steps > 3 * fraction[4].warmup_steps  # what the count avoids
    for spec in by_batch.values():
        lrs = lr_table(spec.steps, spec.lr, spec.schedule)
        assert lrs[DEFAULT_WARMUP_STEPS - 1] == pytest.approx(spec.lr)
        assert lrs[DEFAULT_WARMUP_STEPS - 2] < spec.lr
    short = plan_trials(recipe(tokens={"absolute": [16 * 4 * 10]}), "data")
    assert {s.warmup_steps for s in short if s.batch_size == 4} == {10}  # capped at the run


def test_trial_id_says_which_warmup() -> None:
    ids = {
        name: {s.trial_id for s in plan_trials(recipe(schedule=schedule), "data")}
        for name, schedule in (
            ("count", {"warmup_steps": 100}),
            ("other count", {"warmup_steps": 50}),
            ("fraction", {"warmup_fraction": 0.05}),
        )
    }
    assert ids["count"] == {s.trial_id for s in plan_trials(recipe(), "data")}
    assert not ids["count"] & ids["other count"] and not ids["count"] & ids["fraction"]


def test_trials_column_and_fit_json_schedule(tmp_path: Path) -> None:
    specs = plan_trials(
        recipe(
            learning_rates={"values": [1e-3, 2e-3, 4e-3]},
            batch_sizes=[1, 2, 4],
            tokens={"absolute": [2048, 16384]},
        ),
        "data",
    )
    sink = ResultSink(tmp_path)
    for spec in specs:
        loss = 3.0 + (math.log(spec.lr / 2e-3)) ** 2 + 0.1 * (math.log(spec.batch_size / 2)) ** 2
        sink.record(
            spec, TrialOutcome(spec.trial_id, "complete", loss, loss, spec.steps, spec.tokens, 1.0, 0.0, 1.0)
        )
    rows = read_trials(tmp_path).table.to_pylist()
    assert {(r["warmup_steps"], r["warmup_fraction"]) for r in rows if r["tokens_budget"] == 16384} == {
        (100, None)
    }
    assert {r["warmup_steps"] for r in rows if r["tokens_budget"] == 2048} == {32, 64, 100}  # capped
    sweep = clean_trials(read_trials(tmp_path).table)
    assert sweep.schedule == {
        "kind": "cosine",
        "warmup_steps": 100,
        "min_lr_ratio": 0.1,
        "decay_fraction": 0.2,
    }


def test_export_carries_the_count(tmp_path: Path) -> None:
    import json

    document = json.loads((DATA / "fit.json").read_text())
    document["schedule"] = {"kind": "cosine", "warmup_steps": 100, "min_lr_ratio": 0.1}
    (tmp_path / "fit.json").write_text(json.dumps(document))
    hp = load_hparams(tmp_path / "fit.json")
    from sweeper.export.table import Target

    long = build_record(hp, Target("long", 1e5, 1e6, 32), "sha")
    assert long["warmup_steps"] == 100 and long["warmup_fraction"] is None and long["steps"] > 100
    tiny = build_record(hp, Target("tiny", 1e5, 64 * 32, 32), "sha")
    assert tiny["warmup_steps"] == min(100, tiny["steps"])
    document["schedule"] = {"kind": "cosine", "warmup_fraction": 0.1, "min_lr_ratio": 0.1}
    (tmp_path / "fit.json").write_text(json.dumps(document))
    fraction = build_record(load_hparams(tmp_path / "fit.json"), Target("f", 1e5, 1e6, 32), "sha")
    assert fraction["warmup_steps"] == round(0.1 * fraction["steps"])


def test_smoothing_and_evaluation_count_tokens_not_steps() -> None:
    # The EMA forgets the same share per token at every batch of one cell...
    d = 200_000
    per_token = {b: (1 - ema_alpha(b, d)) ** (1 / b) for b in (32, 64, 128, 1024)}
    assert max(per_token.values()) == pytest.approx(min(per_token.values()), rel=1e-12)
    # ...over a horizon no longer than a tenth of a short cell's budget.
    assert ema_alpha(32, 3_200) > ema_alpha(32, d)
    specs = plan_trials(recipe(evaluation={"every_tokens": 1024}), "data")
    assert {s.eval_every_steps * s.batch_size_tokens for s in specs} == {1024}
    assert {s.eval_every_steps for s in plan_trials(recipe(evaluation={"every_steps": 7}), "data")} == {7}
