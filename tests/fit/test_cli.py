"""The fit-stage commands: output, JSON, and the bad-input paths (one line, exit 2)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from tests.fit.synthetic import synthetic_rows, write_run


def _run(cli, args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_fit_then_predict(cli, synthetic_run):
    result = _run(cli, ["fit", str(synthetic_run), "--bootstrap", "200", "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "learning rate: lr = a * N^alpha * D^beta" in result.output
    assert "near-optimal runs" in result.output
    fit_json = synthetic_run / "fit.json"
    result = _run(
        cli, ["predict", str(fit_json), "--params", "3e7", "--tokens", "3e9", "--seq-len", "256", "--json"]
    )
    assert result.exit_code == 0
    payload = json.loads(result.stdout)
    for key in (
        "lr",
        "batch_size_tokens",
        "batch_size_sequences",
        "lr_interval",
        "batch_size_tokens_interval",
    ):
        assert key in payload
    assert payload["lr_interval"][0] < payload["lr"] < payload["lr_interval"][1]


def test_predict_beyond_range_warns_on_stderr(cli, synthetic_run):
    _run(cli, ["fit", str(synthetic_run), "--bootstrap", "50", "--no-plots"])
    result = CliRunner().invoke(
        cli,
        [
            "predict",
            str(synthetic_run / "fit.json"),
            "--params",
            "1e9",
            "--tokens",
            "1e11",
            "--seq-len",
            "256",
        ],
    )
    assert result.exit_code == 0
    assert "10x beyond the fitted range" in result.stderr
    assert "learning rate" in result.stdout and "beyond" not in result.stdout


def test_fit_missing_run_dir(cli, tmp_path):
    result = CliRunner().invoke(cli, ["fit", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: run folder not found")
    assert "Traceback" not in result.output


def test_fit_without_complete_trials(cli, tmp_path):
    rows = synthetic_rows(sizes=(1e6, 1e7), budgets=(1e8, 1e9), n_lr=3, n_b=2)
    for row in rows:
        row["status"], row["loss"] = "failed", None
    write_run(tmp_path, rows)
    result = CliRunner().invoke(cli, ["fit", str(tmp_path)])
    assert result.exit_code == 2
    assert "no complete trials" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "fit.json").exists()


def test_fit_with_too_few_cells(cli, tmp_path):
    write_run(tmp_path, synthetic_rows(sizes=(1e6, 1e7), budgets=(1e8,)))
    result = CliRunner().invoke(cli, ["fit", str(tmp_path), "--no-plots"])
    assert result.exit_code == 2
    assert "too few" in result.stderr or "distinct" in result.stderr
    assert not (tmp_path / "fit.json").exists()


def test_predict_missing_fit_json(cli, tmp_path):
    result = CliRunner().invoke(
        cli, ["predict", str(tmp_path / "fit.json"), "--params", "1e6", "--tokens", "1e8", "--seq-len", "64"]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("error: fit file not found")
