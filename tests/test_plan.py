"""Plan: cells and trial specs; content-hash ids are stable and sensitive."""

from __future__ import annotations

import pytest

from sweeper.plan import plan_cells, plan_trials
from sweeper.recipe import RecipeError, parse_recipe
from tests.conftest import MINIMAL_RECIPE


def _recipe(**changes):
    return parse_recipe({**MINIMAL_RECIPE, **changes})


def test_grid_is_cells_times_lr_times_batch_times_seed() -> None:
    recipe = _recipe(
        models=[{"d_model": 16, "n_layers": 1, "n_heads": 2}, {"d_model": 32, "n_layers": 1, "n_heads": 2}],
        tokens={"absolute": [1e4, 2e4]},
        batch_sizes=[4, 8, 16],
        seeds=[0, 1],
    )
    trials = plan_trials(recipe, "data0")
    assert len(plan_cells(recipe)) == 4
    assert len(trials) == 4 * 2 * 3 * 2
    assert len({t.trial_id for t in trials}) == len(trials)


def test_same_spec_same_id_across_sweeps() -> None:
    first = plan_trials(_recipe(), "data0")
    second = plan_trials(_recipe(name="other-name"), "data0")
    assert [t.trial_id for t in first] == [t.trial_id for t in second]


def test_id_changes_with_anything_that_changes_the_run() -> None:
    base = {t.trial_id for t in plan_trials(_recipe(), "data0")}
    assert base.isdisjoint(t.trial_id for t in plan_trials(_recipe(), "data1"))
    assert base.isdisjoint(t.trial_id for t in plan_trials(_recipe(seeds=[7]), "data0"))
    assert base.isdisjoint(t.trial_id for t in plan_trials(_recipe(schedule={"kind": "constant"}), "data0"))
    assert base.isdisjoint(t.trial_id for t in plan_trials(_recipe(optimizer={"weight_decay": 0.0}), "data0"))


def test_steps_cover_the_token_budget() -> None:
    for trial in plan_trials(_recipe(batch_sizes=[4, 8]), "d"):
        assert trial.steps == round(trial.tokens_budget / trial.batch_size_tokens)
        assert abs(trial.tokens - trial.tokens_budget) <= trial.batch_size_tokens


def test_a_rung_with_its_own_learning_rates_sweeps_those_with_the_ids_a_whole_recipe_grid_gives() -> None:
    small = {"d_model": 16, "n_layers": 1, "n_heads": 2}
    large = {"d_model": 32, "n_layers": 1, "n_heads": 2}
    own = {"values": [1e-4, 2e-4]}
    mixed = _recipe(models=[small, {**large, "learning_rates": own}])
    trials = plan_trials(mixed, "data0")
    lrs_by_width = {d: sorted({t.lr for t in trials if t.shape.d_model == d}) for d in (16, 32)}
    assert lrs_by_width == {16: mixed.learning_rates.all(), 32: [1e-4, 2e-4]}
    # The override is not part of the shape: the same run has the same id either way.
    whole = plan_trials(_recipe(models=[large], learning_rates=own), "data0")
    assert {t.trial_id for t in whole} <= {t.trial_id for t in trials}
    assert all(type(t.shape).__name__ == "ModelShape" for t in trials)


def test_learning_rates_may_live_on_every_rung_but_not_on_none() -> None:
    rung = {"d_model": 16, "n_layers": 1, "n_heads": 2}
    recipe = {k: v for k, v in MINIMAL_RECIPE.items() if k != "learning_rates"}
    ok = parse_recipe({**recipe, "models": [{**rung, "learning_rates": {"values": [1e-3]}}]})
    assert ok.learning_rates_for(ok.shapes[0]) == [1e-3]
    with pytest.raises(RecipeError, match="learning_rates: .* on every model"):
        parse_recipe({**recipe, "models": [rung]})
