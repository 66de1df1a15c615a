"""The hyperparameter table: every format parsed back and checked against `sweeper predict`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from sweeper.cli import main
from sweeper.cli.exporting import _FORMATS
from sweeper.export import FORMATS, SCHEMA_VERSION, ExportError, load_targets, read_table

from .conftest import add_loss_law, predict_printed, same_4g

TABLES = ["json", "yaml", "csv", "parquet"]


def run_export(fit_json: Path, targets: Path, fmt: str, out: Path, *extra: str):
    return CliRunner().invoke(
        main, ["export", str(fit_json), "--targets", str(targets), "--format", fmt, "--out", str(out), *extra]
    )


def test_cli_lists_every_format() -> None:
    assert tuple(_FORMATS) == FORMATS


@pytest.mark.parametrize("fmt", TABLES)
def test_table_matches_predict(fit_dir: Path, targets_file: Path, tmp_path: Path, fmt: str) -> None:
    add_loss_law(fit_dir / "fit.json")
    out = tmp_path / f"hparams.{fmt}"
    result = run_export(fit_dir / "fit.json", targets_file, fmt, out)
    assert result.exit_code == 0, result.output
    records = read_table(out)
    targets = load_targets(targets_file)
    assert [r["name"] for r in records] == [t.name for t in targets]
    for record, target in zip(records, targets):
        printed = predict_printed(fit_dir / "fit.json", target.params, target.tokens, target.seq_len)
        assert int(record["schema_version"]) == SCHEMA_VERSION
        for key, index in (("lr", 0), ("lr_low", 1), ("lr_high", 2)):
            assert same_4g(record[key], printed["lr"][index]), (key, record[key], printed)
        for key, index in (
            ("batch_size_tokens", 0),
            ("batch_size_tokens_low", 1),
            ("batch_size_tokens_high", 2),
        ):
            assert f"{float(record[key]):.0f}" == printed["batch_size_tokens"][index]
        assert int(record["batch_size_sequences"]) == printed["batch_size_sequences"][0]
        assert int(record["batch_size_sequences_low"]) == printed["batch_size_sequences"][1]
        assert same_4g(record["loss"], printed["loss"])
        # The proxies' schedule, from the recipe.yaml saved next to fit.json.
        assert record["schedule"] == "cosine" and float(record["warmup_fraction"]) == 0.1
        assert int(record["warmup_steps"]) == round(0.1 * int(record["steps"]))
        # Provenance.
        assert (
            record["fit_sha256"]
            == __import__("hashlib").sha256((fit_dir / "fit.json").read_bytes()).hexdigest()
        )
        fitted = json.loads((fit_dir / "fit.json").read_text())
        assert record["sweep"] == fitted["sweep"] and record["estimator"] == fitted["estimator"]
        assert float(record["fitted_params_max"]) == fitted["data_range"]["n_params_max"]
        assert float(record["extrapolation_params"]) > 1.0 and "beyond the fitted range" in record["warnings"]


def test_round_to_shows_the_rounding(fit_dir: Path, targets_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    assert run_export(fit_dir / "fit.json", targets_file, "json", out, "--round-to", "3").exit_code == 0
    for record in json.loads(out.read_text())["records"]:
        assert record["batch_size_sequences"] % 3 == 0 and record["batch_round_to"] == 3
        exact = record["batch_size_tokens"] / record["seq_len"]
        assert record["batch_size_sequences_exact"] == pytest.approx(exact)
        assert record["batch_size_tokens_used"] == record["batch_size_sequences"] * record["seq_len"]
        assert record["batch_rounding_change"] == pytest.approx(
            record["batch_size_tokens_used"] / record["batch_size_tokens"] - 1
        )


def test_no_loss_law_gives_null_loss_and_typed_parquet(
    fit_dir: Path, targets_file: Path, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "t.parquet"
    assert run_export(fit_dir / "fit.json", targets_file, "parquet", out).exit_code == 0
    table = pq.read_table(out)
    assert str(table.schema.field("loss").type) == "double"
    assert table.column("loss").to_pylist() == [None, None]
    assert table.schema.metadata[b"schema_version"] == str(SCHEMA_VERSION).encode()


def test_schedule_unknown_without_recipe(fit_dir: Path, targets_file: Path, tmp_path: Path) -> None:
    (fit_dir / "recipe.yaml").unlink()
    out = tmp_path / "t.yaml"
    assert run_export(fit_dir / "fit.json", targets_file, "yaml", out).exit_code == 0
    record = yaml.safe_load(out.read_text())["records"][0]
    assert record["schedule"] == "unknown" and record["warmup_steps"] is None


@pytest.mark.parametrize(
    "content, message",
    [
        ("- {name: a, params: 1e6}\n", "missing"),
        ("- {name: a, params: 1e6, tokens: 1e7, seq_len: 32, lr: 1}\n", "unknown"),
        ("{name: a}\n", "list"),
        ("- {name: a, params: -1, tokens: 1e7, seq_len: 32}\n", "positive"),
    ],
)
def test_bad_targets_one_line_exit_2(fit_dir: Path, tmp_path: Path, content: str, message: str) -> None:
    targets = tmp_path / "bad.yaml"
    targets.write_text(content)
    out = tmp_path / "never.json"
    result = run_export(fit_dir / "fit.json", targets, "json", out)
    assert result.exit_code == 2 and message in result.stderr and not out.exists()
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_fit_exit_2(targets_file: Path, tmp_path: Path) -> None:
    result = run_export(tmp_path / "nope.json", targets_file, "json", tmp_path / "o.json")
    assert result.exit_code == 2 and "not found" in result.stderr


def test_export_imports_neither_ray_nor_torch(fit_dir: Path, targets_file: Path) -> None:
    # A trainer's launch script imports this next to load_hparams: it must stay light.
    code = (
        "import sys\n"
        "from sweeper.hparams import load_hparams\n"
        "from sweeper.export import export, load_targets\n"
        f"targets = load_targets({str(targets_file)!r})\n"
        "for fmt in ('json', 'yaml', 'csv', 'hf', 'torchtitan', 'megatron'):\n"
        f"    export({str(fit_dir / 'fit.json')!r}, targets, fmt)\n"
        f"load_hparams({str(fit_dir / 'fit.json')!r}).predict(1e5, 1e6, 32)\n"
        "heavy = [m for m in ('ray', 'torch', 'optuna') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_export_api_raises_export_error(fit_dir: Path) -> None:
    from sweeper.export import Target, export

    with pytest.raises(ExportError):
        export(fit_dir / "fit.json", [Target("a", 1e5, 1e6, 32)], "xml")
