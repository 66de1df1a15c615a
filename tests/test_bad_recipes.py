"""Malformed recipes, generated: each gives one line per problem naming the field, and the
CLI exits 2 with no traceback and nothing written."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sweeper.recipe import RecipeError, parse_recipe
from tests.conftest import MINIMAL_RECIPE

not_a_positive_int = st.one_of(
    st.integers(max_value=0),
    st.text(alphabet="abcxyz -", min_size=1, max_size=5),
    st.lists(st.integers(), max_size=2),
    st.floats(min_value=-1e6, max_value=1e6).filter(lambda f: f != int(f)),
    st.just(float("inf")),
)
not_a_positive_number = st.one_of(
    st.floats(max_value=0, allow_nan=False),
    st.text(alphabet="abcxyz -", min_size=1, max_size=5),
    st.dictionaries(st.text(max_size=3), st.integers(), min_size=1, max_size=2),
)


# (path into the recipe, strategy of invalid values, the field path the message must name)
MUTATIONS = [
    (("models", 0, "d_model"), not_a_positive_int, "models[0].d_model"),
    (("models", 0, "n_layers"), not_a_positive_int, "models[0].n_layers"),
    (("models", 0, "n_heads"), not_a_positive_int, "models[0].n_heads"),
    (("models", 0, "seq_len"), not_a_positive_int, "models[0].seq_len"),
    (("batch_sizes", 0), not_a_positive_int, "batch_sizes"),
    (("learning_rates", "grid", "min"), not_a_positive_number, "learning_rates.grid.min"),
    (("learning_rates", "grid", "count"), st.integers(max_value=1), "learning_rates.grid.count"),
    (("tokens", "absolute", 0), not_a_positive_number, "tokens"),
    (
        ("schedule",),
        st.fixed_dictionaries(
            {"kind": st.text(max_size=6).filter(lambda t: t not in ("cosine", "constant", "wsd"))}
        ),
        "schedule.kind",
    ),
    (
        ("resources",),
        st.fixed_dictionaries({"cpus": st.floats(max_value=0, allow_nan=False)}),
        "resources.cpus",
    ),
]


def _mutate(path: tuple, value: object) -> dict:
    recipe = copy.deepcopy(MINIMAL_RECIPE)
    target = recipe
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return recipe


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_generated_bad_values_name_their_field(data) -> None:
    path, strategy, field_path = data.draw(st.sampled_from(MUTATIONS))
    value = data.draw(strategy)
    with pytest.raises(RecipeError) as caught:
        parse_recipe(_mutate(path, value))
    problems = caught.value.problems
    assert any(p.startswith(field_path) for p in problems), (value, problems)
    assert all("\n" not in p and "Traceback" not in p for p in problems)


@settings(max_examples=30, deadline=None)
@given(key=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12))
def test_generated_unknown_keys_are_errors(key: str) -> None:
    known = set(MINIMAL_RECIPE) | {
        "schedule",
        "optimizer",
        "data",
        "seeds",
        "resources",
        "evaluation",
        "output",
        "max_failed_fraction",
    }
    if key in known:
        return
    with pytest.raises(RecipeError) as caught:
        parse_recipe({**MINIMAL_RECIPE, key: 1})
    assert caught.value.problems == [f"{key}: unknown key (not a recipe field)"]


@settings(max_examples=30, deadline=None)
@given(low=st.floats(1e-6, 1.0), factor=st.floats(0.01, 1.0))
def test_generated_inverted_ranges_are_errors(low: float, factor: float) -> None:
    with pytest.raises(RecipeError) as caught:
        parse_recipe(
            {**MINIMAL_RECIPE, "learning_rates": {"grid": {"min": low, "max": low * factor, "count": 3}}}
        )
    assert any("min" in p and "max" in p for p in caught.value.problems)


HAND_WRITTEN_FILES = {
    "heads_do_not_divide.yaml": {**MINIMAL_RECIPE, "models": [{"d_model": 30, "n_layers": 1, "n_heads": 4}]},
    "one_point_range.yaml": {
        **MINIMAL_RECIPE,
        "learning_rates": {"grid": {"min": 0.01, "max": 0.01, "count": 1}},
    },
    "negative_batch.yaml": {**MINIMAL_RECIPE, "batch_sizes": [-4]},
    "string_tokens.yaml": {**MINIMAL_RECIPE, "tokens": {"absolute": ["many"]}},
    "missing_data_file.yaml": {**MINIMAL_RECIPE, "data": {"source": "text", "path": "/no/such/file.txt"}},
    "typo_key.yaml": {**MINIMAL_RECIPE, "learning_rate": {"values": [0.1]}},
}


@pytest.mark.parametrize("name", sorted(HAND_WRITTEN_FILES))
def test_cli_rejects_hand_written_bad_recipes(tmp_path: Path, name: str) -> None:
    recipe = dict(HAND_WRITTEN_FILES[name], output=str(tmp_path / "run"))
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe))
    result = subprocess.run(
        [sys.executable, "-m", "sweeper", "submit", str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines and all(line.startswith("error: ") for line in lines)
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()
