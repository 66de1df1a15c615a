"""Bad input, as an ordinary user types it: each case is refused with one `error:` line that
names the field or file, exit code 2, no traceback, and nothing written or changed.

All of these are refused before a cluster starts, so they run in-process (click's runner).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import stat
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from sweeper.cli import main
from tests.conftest import MINIMAL_RECIPE

FIT_JSON = Path(__file__).parent / "export" / "data" / "fit.json"


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def refused(*args: str, names: tuple[str, ...] = ()) -> str:
    """Run the CLI; assert one `error:` line, exit 2, no traceback; return the line."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception  # not a crash
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.output
    for name in names:
        assert name in errors[0], errors[0]
    return errors[0]


def recipe_file(folder: Path, **changes: object) -> Path:
    recipe = copy.deepcopy(MINIMAL_RECIPE)
    recipe["data"] = {"source": "builtin", "max_bytes": 200000}
    recipe.update(changes)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def refused_submit(tmp_path: Path, names: tuple[str, ...], **changes: object) -> str:
    """``submit`` of MINIMAL_RECIPE with ``changes``; the run folder is the recipe's
    ``output`` when given, else --out."""
    out = [] if "output" in changes else ["--out", tmp_path / "run"]
    before = snapshot(tmp_path)
    started = time.time()
    line = refused("submit", recipe_file(tmp_path, **changes), *out, names=names)
    assert time.time() - started < 30  # refused, not attempted
    after = snapshot(tmp_path)
    after.pop("recipe.yaml")
    before.pop("recipe.yaml", None)
    assert after == before, "a refused sweep wrote something"
    return line


# ----------------------------------------------------------------------------- usage


@pytest.mark.parametrize(
    "args, named",
    [
        (["submit", "recipe.yaml", "--bogus"], "'--bogus'"),
        (["submit"], "'RECIPE'"),
        (["frobnicate"], "'frobnicate'"),
        (["--bogus"], "'--bogus'"),
        (["predict", FIT_JSON, "--params", "abc", "--tokens", "1e5", "--seq-len", "32"], "'--params'"),
        (["import", "table"], "'FILE'"),
        (["import", "table", "t.csv", "--out", "o", "--nope"], "'--nope'"),
    ],
)
def test_usage_errors_are_one_line_naming_what_is_wrong(args: list[object], named: str) -> None:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], result.stderr
    assert "--help" in lines[0]  # where to read more, on the same line


# ----------------------------------------------------------------------------- submit


def test_output_that_is_an_existing_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.write_text("mine")
    refused_submit(tmp_path, ("run folder", str(target), "not a folder"), output=str(target))
    assert target.read_text() == "mine"


def test_output_in_a_read_only_place_is_refused(tmp_path: Path) -> None:
    # /proc refuses new folders even for root, where chmod would not.
    refused_submit(tmp_path, ("run folder", "/proc"), output="/proc/sweeper-run/here")


def test_empty_text_source_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    refused_submit(tmp_path, ("data.path", str(empty)), data={"source": "text", "path": str(empty)})


def test_token_file_of_a_partial_id_is_refused(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.bin"
    tokens.write_bytes(np.arange(5000, dtype=np.uint16).tobytes() + b"\x01")  # one odd byte
    refused_submit(
        tmp_path,
        ("data.path", "uint16", "10001 bytes"),
        data={"source": "tokens", "path": str(tokens), "dtype": "uint16"},
    )


def test_corpus_shorter_than_one_sequence_is_refused_before_any_trial(tmp_path: Path) -> None:
    text = tmp_path / "short.txt"
    text.write_bytes(b"a few words, far fewer than a sequence " * 4)
    refused_submit(
        tmp_path,
        ("models[0].seq_len", "longer"),
        data={"source": "text", "path": str(text)},
        models=[{"d_model": 16, "n_layers": 1, "n_heads": 2, "seq_len": 512}],
    )


def test_token_ids_beyond_the_vocabulary_are_refused_before_any_trial(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.bin"
    np.random.default_rng(0).integers(0, 300, size=20000, dtype=np.uint16).tofile(tokens)
    refused_submit(
        tmp_path,
        ("models[0].vocab_size", "299"),
        data={"source": "tokens", "path": str(tokens)},
        models=[{"d_model": 16, "n_layers": 1, "n_heads": 2, "seq_len": 16, "vocab_size": 256}],
    )


def test_budgets_that_round_to_one_cell_are_refused(tmp_path: Path) -> None:
    refused_submit(tmp_path, ("tokens", "100000", "100400"), tokens={"absolute": [100000, 100400]})


def test_lr_grid_that_collapses_when_rounded_is_refused(tmp_path: Path) -> None:
    refused_submit(
        tmp_path,
        ("learning_rates.grid", "40 points"),
        learning_rates={"grid": {"min": 1e-3, "max": 1.00001e-3, "count": 40}},
    )


SHAPE = MINIMAL_RECIPE["models"][0]


@pytest.mark.parametrize(
    "change, names",
    [
        ({"models": [SHAPE, SHAPE]}, ("models", "listed twice")),
        ({"models": [SHAPE, {**SHAPE, "mlp_ratio": 3}]}, ("models", "mlp_ratio")),
        ({"tokens": {"absolute": [4096, 4096]}}, ("tokens", "distinct")),
        ({"learning_rates": {"values": [0.01, 0.01]}}, ("learning_rates", "distinct")),
        ({"batch_sizes": [4, 4]}, ("batch_sizes", "distinct")),
        ({"seeds": [0, 0]}, ("seeds", "distinct")),
    ],
)
def test_a_plan_that_lists_one_run_twice_is_refused(
    tmp_path: Path, change: dict, names: tuple[str, ...]
) -> None:
    # Merging the repeats would run fewer trials than the recipe lists, silently.
    refused_submit(tmp_path, names, **change)


def test_budget_smaller_than_one_batch_is_refused(tmp_path: Path) -> None:
    refused_submit(tmp_path, ("tokens", "budget 1 ", "one batch"), tokens={"absolute": [1]})


@pytest.mark.timeout(60)
def test_absurd_lr_grid_is_refused_at_once(tmp_path: Path) -> None:
    refused_submit(
        tmp_path,
        ("learning_rates.grid.count",),
        learning_rates={"grid": {"min": 1e-4, "max": 1e-1, "count": 1_000_000_000}},
    )


@pytest.mark.timeout(60)
def test_absurd_token_budget_is_refused_at_once(tmp_path: Path) -> None:
    refused_submit(tmp_path, ("tokens", "1e+300"), tokens={"absolute": [1e300]})


# ----------------------------------------------------------------------------- predict


def test_predict_refuses_infinite_tokens() -> None:
    refused("predict", FIT_JSON, "--params", "1e5", "--tokens", "inf", "--seq-len", "32", names=("tokens",))


def test_predict_json_never_prints_a_non_finite_number() -> None:
    refused(
        "predict",
        FIT_JSON,
        "--params",
        "inf",
        "--tokens",
        "1e5",
        "--seq-len",
        "32",
        "--json",
        names=("params",),
    )
    refused(
        "predict",
        FIT_JSON,
        "--params",
        "nan",
        "--tokens",
        "1e5",
        "--seq-len",
        "32",
        "--json",
        names=("params",),
    )


def test_predict_refuses_a_fit_json_missing_a_field(tmp_path: Path) -> None:
    document = json.loads(FIT_JSON.read_text())
    del document["data_range"]["seq_len_max"]
    broken = tmp_path / "fit.json"
    broken.write_text(json.dumps(document))
    refused(
        "predict",
        broken,
        "--params",
        "1e5",
        "--tokens",
        "1e5",
        "--seq-len",
        "32",
        names=(str(broken), "seq_len_max"),
    )


def test_predict_refuses_a_binary_fit_json(tmp_path: Path) -> None:
    binary = tmp_path / "fit.json"
    binary.write_bytes(bytes(range(256)) * 4)
    refused("predict", binary, "--params", "1e5", "--tokens", "1e5", "--seq-len", "32", names=(str(binary),))


# ----------------------------------------------------------------------------- import


def _table(tmp_path: Path, lr: list[object]) -> Path:
    path = tmp_path / "table.csv"
    rows = ["lr,loss,N,D,B,S"] + [f"{value},2.5,1e6,1e8,64,512" for value in lr]
    path.write_text("\n".join(rows) + "\n")
    return path


def _import_args(table: Path, out: Path) -> list[object]:
    return [
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
        "--map",
        "batch_size=B",
        "--map",
        "seq_len=S",
    ]


@pytest.mark.parametrize("bad", ["fast", "inf"])
def test_import_refuses_text_or_inf_in_a_numeric_column(tmp_path: Path, bad: str) -> None:
    out = tmp_path / "run"
    refused(*_import_args(_table(tmp_path, [0.001, bad, 0.004]), out), names=("column lr", "data row 2"))
    assert not out.exists()


def test_import_refuses_an_out_that_is_a_file(tmp_path: Path) -> None:
    out = tmp_path / "existing"
    out.write_text("keep me")
    refused(*_import_args(_table(tmp_path, [0.001, 0.002]), out), names=("--out", str(out)))
    assert out.read_text() == "keep me"


def test_imported_part_files_are_readable_by_the_group(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, [str(a) for a in _import_args(_table(tmp_path, [0.001]), tmp_path / "run")]
    )
    assert result.exit_code == 0, result.output
    parts = list((tmp_path / "run" / "trials").glob("*.parquet"))
    assert parts and all(stat.S_IMODE(p.stat().st_mode) == 0o666 & ~_umask() for p in parts)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ----------------------------------------------------------------------------- export


@pytest.fixture
def fit_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "fit"
    folder.mkdir()
    shutil.copy(FIT_JSON, folder / "fit.json")
    return folder


def _targets(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "targets.yaml"
    path.write_text(text)
    return path


def test_export_refuses_an_out_that_is_a_folder_and_leaves_nothing(tmp_path: Path, fit_folder: Path) -> None:
    out = tmp_path / "exports"
    out.mkdir()
    targets = _targets(tmp_path, "- {name: a, params: 1e5, tokens: 1e6, seq_len: 32}\n")
    refused(
        "export",
        fit_folder,
        "--targets",
        targets,
        "--format",
        "json",
        "--out",
        out,
        names=(str(out), "folder"),
    )
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    "entry, field",
    [
        ("{name: a, params: .inf, tokens: 1e6, seq_len: 32}", "params"),
        ("{name: a, params: 1e5, tokens: .nan, seq_len: 32}", "tokens"),
        ("{name: a, params: 1e5, tokens: 1e6, seq_len: 2.7}", "seq_len"),
    ],
)
def test_export_refuses_targets_it_would_change(
    tmp_path: Path, fit_folder: Path, entry: str, field: str
) -> None:
    out = tmp_path / "table.json"
    refused(
        "export",
        fit_folder,
        "--targets",
        _targets(tmp_path, f"- {entry}\n"),
        "--format",
        "json",
        "--out",
        out,
        names=(f"target [0].{field}",),
    )
    assert not out.exists()


def test_exports_are_readable_by_the_group(tmp_path: Path, fit_folder: Path) -> None:
    out = tmp_path / "table.csv"
    targets = _targets(tmp_path, "- {name: a, params: 1e4, tokens: 2e4, seq_len: 32}\n")
    result = CliRunner().invoke(
        main, ["export", str(fit_folder), "--targets", str(targets), "--format", "csv", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~_umask()
