"""Fixtures: a real fit.json (`sweeper fit` of a synthetic smoke-shaped sweep with determined
laws; make_fit_fixture.py writes it) and the smoke recipe.yaml beside it, copied into a fresh
run folder per test."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from sweeper.cli import main

DATA = Path(__file__).parent / "data"
TARGETS_YAML = """\
- {name: small, params: 5e4, tokens: 6.4e4, seq_len: 32}
- {name: big, params: 2.0e+5, tokens: 3.0e+5, seq_len: 32}
"""


@pytest.fixture
def fit_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(DATA / "fit.json", run / "fit.json")
    shutil.copy(DATA / "recipe.yaml", run / "recipe.yaml")
    return run


@pytest.fixture
def targets_file(tmp_path: Path) -> Path:
    path = tmp_path / "targets.yaml"
    path.write_text(TARGETS_YAML)
    return path


def add_loss_law(fit_json: Path) -> None:
    """Give a fit a loss law L = E + A/N^a + B/D^b (what `sweeper fit` writes when it fits one)."""
    document = json.loads(fit_json.read_text())
    point = [0.5, 3.0, 4.0, 0.3, 0.35]  # log E, log A, log B, alpha, beta
    document["loss_law"] = {
        "parameters": point,
        "bootstrap_parameters": [[p * (1 + 0.01 * k) for p in point] for k in range(-5, 6)],
    }
    fit_json.write_text(json.dumps(document))


def predict_printed(fit_json: Path, params: float, tokens: float, seq_len: int) -> dict:
    """What `sweeper predict` prints, parsed: the reference every export must match."""
    result = CliRunner().invoke(
        main,
        [
            "predict",
            str(fit_json),
            "--params",
            repr(params),
            "--tokens",
            repr(tokens),
            "--seq-len",
            str(seq_len),
        ],
    )
    assert result.exit_code == 0, result.output
    text = result.stdout
    number = r"([-+0-9.e]+)"
    lr = re.search(rf"learning rate\s+{number}\s+95% interval \[{number}, {number}\]", text)
    tokens_line = re.search(rf"batch size \(tokens\)\s+{number}\s+95% interval \[{number}, {number}\]", text)
    seqs = re.search(rf"batch size \(sequences\)\s+{number}\s+95% interval \[{number}, {number}\]", text)
    loss = re.search(rf"expected loss\s+{number}", text)
    return {
        "lr": [lr.group(i) for i in (1, 2, 3)],
        "batch_size_tokens": [tokens_line.group(i) for i in (1, 2, 3)],
        "batch_size_sequences": [int(seqs.group(i)) for i in (1, 2, 3)],
        "loss": loss.group(1) if loss else None,
    }


def same_4g(value: float, printed: str) -> bool:
    return f"{float(value):.4g}" == f"{float(printed):.4g}"
