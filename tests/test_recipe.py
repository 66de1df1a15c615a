"""Recipe validation: good recipes load, bad ones name each problem, the CLI exits 2."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sweeper.recipe import RecipeError, load_recipe, parse_recipe
from tests.conftest import MINIMAL_RECIPE, RECIPES


@pytest.mark.parametrize("name", ["demo.yaml", "smoke.yaml"])
def test_shipped_recipes_load(name: str) -> None:
    recipe = load_recipe(RECIPES / name)
    assert recipe.models and recipe.batch_sizes
    assert all(recipe.learning_rates_for(shape) for shape in recipe.shapes)


def test_demo_recipe_is_big_enough_to_fit() -> None:
    recipe = load_recipe(RECIPES / "demo.yaml")
    assert len(recipe.models) >= 3
    assert len(recipe.tokens.for_shape(recipe.models[0])) >= 2
    assert all(len(recipe.learning_rates_for(shape)) >= 5 for shape in recipe.shapes)
    assert len(recipe.batch_sizes) >= 3


def test_log_grid_endpoints_and_spacing() -> None:
    recipe = parse_recipe(
        {**MINIMAL_RECIPE, "learning_rates": {"grid": {"min": 1e-3, "max": 1e-1, "count": 5}}}
    )
    values = recipe.learning_rates.all()
    assert values[0] == pytest.approx(1e-3) and values[-1] == pytest.approx(1e-1)
    ratios = [b / a for a, b in zip(values, values[1:])]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-4)


def test_per_param_budgets_scale_with_n() -> None:
    recipe = parse_recipe(
        {
            **MINIMAL_RECIPE,
            "models": [
                {"d_model": 16, "n_layers": 1, "n_heads": 2},
                {"d_model": 32, "n_layers": 1, "n_heads": 2},
            ],
            "tokens": {"per_param": [10]},
        }
    )
    small, large = recipe.models
    assert recipe.tokens.for_shape(small) == [10 * small.n_params_nonembedding]
    assert recipe.tokens.for_shape(large) == [10 * large.n_params_nonembedding]


def _problems(data: object) -> list[str]:
    with pytest.raises(RecipeError) as caught:
        parse_recipe(data)
    return caught.value.problems


def _with(path: str, value: object) -> dict:
    data = copy.deepcopy(MINIMAL_RECIPE)
    target = data
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if key.isdigit() else target[key]
    last = keys[-1]
    if value is _DELETE:
        del target[last]
    else:
        target[int(last) if last.isdigit() else last] = value
    return data


_DELETE = object()

BAD_RECIPES = [
    ("models.0.d_model", 0, "models[0].d_model"),
    ("models.0.d_model", -8, "models[0].d_model"),
    ("models.0.d_model", "wide", "models[0].d_model"),
    ("models.0.n_heads", 3, "models[0]"),  # 16 % 3 != 0
    ("models.0.seq_len", 0, "models[0].seq_len"),
    ("models", [], "models"),
    ("batch_sizes", [0, 4], "batch_sizes"),
    ("batch_sizes", [4, 4], "batch_sizes"),
    ("batch_sizes", "eight", "batch_sizes"),
    ("learning_rates", {"grid": {"min": 0.1, "max": 0.01, "count": 3}}, "learning_rates.grid"),
    ("learning_rates", {"grid": {"min": 0.01, "max": 0.1, "count": 1}}, "learning_rates.grid.count"),
    ("learning_rates", {"values": [-0.1, 0.1]}, "learning_rates"),
    ("learning_rates", {}, "learning_rates"),
    ("tokens", {"absolute": [0]}, "tokens"),
    ("tokens", {"absolute": [1e5], "per_param": [20]}, "tokens"),
    ("schedule", {"kind": "linear"}, "schedule.kind"),
    ("schedule", {"kind": "wsd", "warmup_fraction": 0.5, "decay_fraction": 0.6}, "schedule"),
    ("data", {"source": "text", "path": "/nonexistent/corpus.txt"}, "data"),
    ("data", {"source": "tokens"}, "data"),
    ("resources", {"cpus": 0}, "resources.cpus"),
    ("name", "has spaces", "name"),
    ("name", _DELETE, "name"),
    ("colour", "blue", "colour"),  # unknown key
    ("models.0.dmodel", 32, "models[0].dmodel"),  # misspelt key
]


@pytest.mark.parametrize("path,value,field_path", BAD_RECIPES)
def test_bad_recipe_names_the_field(path: str, value: object, field_path: str) -> None:
    problems = _problems(_with(path, value))
    assert problems, "a bad recipe must report at least one problem"
    assert any(p.startswith(field_path) for p in problems), problems
    assert all("\n" not in p for p in problems)


def test_several_problems_are_all_reported() -> None:
    data = _with("models.0.d_model", 0)
    data["batch_sizes"] = [0]
    data["extra_key"] = 1
    problems = _problems(data)
    assert len(problems) >= 3


@pytest.mark.parametrize("data", [None, [1, 2], "just a string", 42])
def test_recipe_that_is_not_a_mapping(data: object) -> None:
    (problem,) = _problems(data)
    assert "expected a YAML mapping" in problem


def test_cli_bad_recipe_exits_2_without_traceback_or_output(tmp_path: Path) -> None:
    recipe = _with("models.0.d_model", 0)
    recipe["output"] = str(tmp_path / "run")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = subprocess.run(
        [sys.executable, "-m", "sweeper", "submit", str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "models[0].d_model" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text", ["", "name: [unclosed", "- a\n- b\n"])
def test_cli_unusable_yaml_exits_2(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "sweeper", "submit", str(path), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()
