"""Property-based: random recipes (valid and not), random numbers for predict and export
(inf, nan, negative, huge), random bytes as fit.json, targets, CSV tables and token files.
Whatever the input, the CLI never shows a traceback, and never exits 0 with a non-finite
number in what it printed or wrote. In-process (click's runner), so it stays fast."""

from __future__ import annotations

import copy
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sweeper.cli import main
from tests.conftest import MINIMAL_RECIPE

FIT_JSON = Path(__file__).parent / "export" / "data" / "fit.json"
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e6, max_value=1e6),
    st.sampled_from([0, -1, 1, 2, 3.5, 1e-300, 1e300, 1e9, 4096, 2**63]),
    st.integers(min_value=-(2**64), max_value=2**64),
)
junk = st.one_of(numbers, st.text(max_size=6), st.none(), st.booleans(), st.lists(numbers, max_size=3))


def invoke(args: list[object]) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def check_outcome(result: Result) -> None:
    """Exit 0 with finite output, or a refusal: exit 2 with `error:` lines. Never a crash."""
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}\n{result.output}"
    )
    assert "Traceback" not in result.output
    if result.exit_code == 0:
        lowered = result.stdout.lower()
        assert "nan" not in lowered.replace("name", "") and "inf" not in lowered.replace("info", ""), (
            result.stdout
        )
    else:
        assert result.exit_code == 2, (result.exit_code, result.output)
        # sweeper's refusals and click's own (an option of the wrong type) alike.
        assert any(line.startswith("error: ") for line in result.stderr.splitlines()), result.stderr


def finite_json(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise AssertionError(f"non-finite number {constant} in JSON output")

    return json.loads(text, parse_constant=refuse)


# ----------------------------------------------------------------------------- recipes

RECIPE_PATHS = [
    ("models", 0, "d_model"),
    ("models", 0, "n_layers"),
    ("models", 0, "n_heads"),
    ("models", 0, "seq_len"),
    ("models", 0, "vocab_size"),
    ("models", 0, "mlp_ratio"),
    ("tokens", "absolute", 0),
    ("tokens", "absolute"),
    ("learning_rates", "grid", "min"),
    ("learning_rates", "grid", "max"),
    ("learning_rates", "grid", "count"),
    ("batch_sizes", 0),
    ("batch_sizes",),
    ("seeds",),
    ("schedule", "warmup_fraction"),
    ("schedule", "warmup_steps"),
    ("evaluation", "val_batches"),
    ("resources", "cpus"),
    ("resources", "memory_gb"),
    ("fuse",),
    ("max_failed_fraction",),
    ("name",),
    ("output",),
]


def _set(recipe: dict, path: tuple, value: object) -> dict:
    """Set ``path`` in ``recipe``; a path an earlier change cut off is left alone."""
    node: Any = recipe
    try:
        for key in path[:-1]:
            node = node.setdefault(key, {}) if isinstance(node, dict) else node[key]
        node[path[-1]] = value
    except (IndexError, TypeError, KeyError, AttributeError):
        pass
    return recipe


@SETTINGS
@given(changes=st.lists(st.tuples(st.sampled_from(RECIPE_PATHS), junk), max_size=3))
def test_random_recipes_are_checked_or_refused(changes: list[tuple[tuple, object]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        recipe = copy.deepcopy(MINIMAL_RECIPE)
        recipe["data"] = {"source": "builtin", "max_bytes": 100000}
        recipe["output"] = str(Path(folder) / "run")
        for path, value in changes:
            if path == ("output",) and not isinstance(value, str):
                continue
            _set(recipe, path, value if path != ("output",) else str(Path(folder) / str(value)))
        recipe_path = Path(folder) / "recipe.yaml"
        recipe_path.write_text(yaml.safe_dump(recipe))
        result = invoke(["submit", recipe_path, "--check"])
        check_outcome(result)
        assert sorted(p.name for p in Path(folder).iterdir()) == ["recipe.yaml"], "--check wrote something"


@SETTINGS
@given(
    data=st.binary(max_size=4000),
    dtype=st.sampled_from(["uint16", "uint32"]),
    seq_len=st.integers(min_value=1, max_value=300),
)
def test_random_token_files_are_checked_or_refused(data: bytes, dtype: str, seq_len: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        tokens = Path(folder) / "tokens.bin"
        tokens.write_bytes(data)
        recipe = copy.deepcopy(MINIMAL_RECIPE)
        recipe["models"][0].update({"seq_len": seq_len, "vocab_size": 2**16})
        recipe["data"] = {"source": "tokens", "path": str(tokens), "dtype": dtype}
        recipe["tokens"] = {"absolute": [seq_len * 4 * 3]}
        recipe_path = Path(folder) / "recipe.yaml"
        recipe_path.write_text(yaml.safe_dump(recipe))
        check_outcome(invoke(["submit", recipe_path, "--check", "--out", Path(folder) / "run"]))
        assert not (Path(folder) / "run").exists()


# ----------------------------------------------------------------------------- predict

number_words = st.one_of(numbers.map(repr), st.sampled_from(["inf", "-inf", "nan", "1e400", "x", "", "0x10"]))


@SETTINGS
@given(params=number_words, tokens=number_words, seq_len=number_words, flops=st.none() | number_words)
def test_predict_with_random_numbers_prints_finite_json_or_refuses(
    params: str, tokens: str, seq_len: str, flops: str | None
) -> None:
    args = ["predict", FIT_JSON, "--params", params, "--tokens", tokens, "--seq-len", seq_len, "--json"]
    result = invoke(args + (["--flops-per-token", flops] if flops is not None else []))
    check_outcome(result)
    if result.exit_code == 0:
        prediction = finite_json(result.stdout)
        assert prediction["lr"] > 0 and prediction["batch_size_sequences"] >= 1


def _mutate_json(document: Any, path: list[int], value: object) -> Any:
    """Replace (or delete, for value ...) the node reached by walking ``path`` as indices."""
    if not path or not isinstance(document, (dict, list)) or not document:
        return None if value is Ellipsis else value
    keys = list(document) if isinstance(document, dict) else list(range(len(document)))
    key = keys[path[0] % len(keys)]
    if value is Ellipsis and len(path) == 1 and isinstance(document, dict):
        del document[key]
        return document
    document[key] = _mutate_json(document[key], path[1:], value)
    return document


@SETTINGS
@given(
    raw=st.one_of(st.binary(max_size=300), st.just(None)),
    path=st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=4),
    value=st.one_of(junk, st.just(Ellipsis)),
)
def test_random_fit_files_are_read_or_refused(raw: bytes | None, path: list[int], value: object) -> None:
    with tempfile.TemporaryDirectory() as folder:
        fit = Path(folder) / "fit.json"
        if raw is not None:
            fit.write_bytes(raw)
        else:  # the real fit.json with one field changed or removed
            document = _mutate_json(json.loads(FIT_JSON.read_text()), path, value)
            fit.write_text(json.dumps(document))
        result = invoke(["predict", fit, "--params", "1e4", "--tokens", "2e4", "--seq-len", "32", "--json"])
        check_outcome(result)
        if result.exit_code == 0:
            finite_json(result.stdout)


# ----------------------------------------------------------------------------- export and import

target_value = st.one_of(junk, st.sampled_from(["7e9", ".inf", "2.7", "-1"]))


@SETTINGS
@given(
    entries=st.lists(
        st.fixed_dictionaries(
            {
                "name": st.text(min_size=1, max_size=4),
                "params": target_value,
                "tokens": target_value,
                "seq_len": target_value,
            }
        ),
        min_size=1,
        max_size=3,
    ),
    fmt=st.sampled_from(["json", "csv", "yaml"]),
)
def test_random_targets_export_finite_tables_or_are_refused(entries: list[dict], fmt: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        fit_dir = Path(folder) / "fit"
        fit_dir.mkdir()
        shutil.copy(FIT_JSON, fit_dir / "fit.json")
        targets = Path(folder) / "targets.yaml"
        targets.write_text(yaml.safe_dump(entries))
        out = Path(folder) / f"table.{fmt}"
        result = invoke(["export", fit_dir, "--targets", targets, "--format", fmt, "--out", out])
        check_outcome(result)
        if result.exit_code != 0:
            assert not out.exists()
            return
        if fmt == "json":
            records = finite_json(out.read_text())["records"]
        elif fmt == "yaml":
            records = yaml.safe_load(out.read_text())["records"]
        else:
            records = [
                dict(zip(out.read_text().splitlines()[0].split(","), line.split(",")))
                for line in out.read_text().splitlines()[1:]
            ]
        for record, entry in zip(records, entries):
            assert math.isfinite(float(record["lr"])) and float(record["lr"]) > 0
            assert float(record["seq_len"]) == float(entry["seq_len"])  # never rounded silently


cell = st.one_of(numbers.map(repr), st.text(alphabet='abc,.-e"\n', max_size=5), st.just(""))


@SETTINGS
@given(
    rows=st.lists(st.lists(cell, min_size=4, max_size=4), min_size=1, max_size=4),
    raw=st.none() | st.binary(max_size=200),
)
def test_random_tables_import_finite_rows_or_are_refused(rows: list[list[str]], raw: bytes | None) -> None:
    from sweeper.results import read_trials

    with tempfile.TemporaryDirectory() as folder:
        table = Path(folder) / "table.csv"
        if raw is not None:
            table.write_bytes(raw)
        else:
            table.write_text("lr,loss,N,D\n" + "\n".join(",".join(row) for row in rows) + "\n")
        out = Path(folder) / "run"
        result = invoke(
            [
                "import",
                "table",
                table,
                "--out",
                out,
                "--map",
                "lr=lr",
                "--map",
                "loss=loss",
                "--map",
                "n_params=N",
                "--map",
                "tokens_budget=D",
                "--set",
                "seq_len=64",
                "--set",
                "batch_size=8",
            ]
        )
        check_outcome(result)
        if result.exit_code == 0:
            trials = read_trials(out).to_pandas()
            for column in ("lr", "n_params", "tokens_budget"):
                assert trials[column].map(lambda v: v is not None and math.isfinite(v)).all(), column
        else:
            assert not (out / "trials").exists()
