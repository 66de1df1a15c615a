"""Importers: Step Law's layout and any mapped CSV/Parquet land in the trials schema."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from sweeper.fit import fit_run, load_sweep
from sweeper.importers import ImportError_, import_steplaw, import_table
from sweeper.results.reader import read_trials
from tests.fit.synthetic import synthetic_rows


def _steplaw_frame() -> pd.DataFrame:
    rows = synthetic_rows(sizes=(1e6, 1e7, 1e8), budgets=(1e8, 1e9), n_lr=7, n_b=4, seq_len=2048)
    frame = pd.DataFrame(
        {
            "lr": [r["lr"] for r in rows],
            "bs": [r["batch_size"] for r in rows],
            "seq_len": 2048,
            "N": [r["n_params"] * 3 for r in rows],
            "Na": [r["n_params"] for r in rows],
            "D": [r["tokens_budget"] for r in rows],
            "loss": [r["loss"] * 1.01 for r in rows],
            "smooth loss": [r["loss"] for r in rows],
        }
    )
    # Step Law's quirk: one grid value spelled with two roundings.
    frame["lr"] = [float(f"{v:.4g}") if i % 2 else float(f"{v:.5g}") for i, v in enumerate(frame["lr"])]
    return frame


def test_steplaw_import_fits_unchanged(tmp_path):
    csv = tmp_path / "steplaw.csv"
    _steplaw_frame().to_csv(csv, index=False)
    assert import_steplaw(csv, tmp_path / "run", size_column="Na") == 168
    table = read_trials(tmp_path / "run").to_pandas()
    assert table["n_params"].max() == 1e8
    # N is Step Law's non-embedding count: not a total, so no total is claimed.
    assert table["n_params_total"].isna().all()
    assert set(table["schedule"]) == {"cosine"}
    assert (table["min_lr_ratio"] * table["lr"]).round(12).eq(1e-5).all()
    assert (table["loss"] == table["smoothed_train_loss"]).all()
    sweep, _ = load_sweep(tmp_path / "run")
    assert sweep.snapped_values > 0
    assert all(c.loss.size == 28 for c in sweep.cells)  # the roundings merged: 7 x 4 per cell
    report = fit_run(tmp_path / "run", n_bootstrap=50, plots=False, loss_law=False)
    assert report.lr_law.coef[1] == pytest.approx(-0.45, abs=0.05)


def test_reimport_is_idempotent(tmp_path):
    csv = tmp_path / "steplaw.csv"
    _steplaw_frame().to_csv(csv, index=False)
    import_steplaw(csv, tmp_path / "run")
    import_steplaw(csv, tmp_path / "run")
    assert read_trials(tmp_path / "run").table.num_rows == 168


def test_generic_table_with_mapping(tmp_path):
    frame = _steplaw_frame().rename(
        columns={"lr": "peak_lr", "smooth loss": "val", "Na": "params", "D": "tokens"}
    )
    frame["bt"] = frame["bs"] * 2048
    path = tmp_path / "table.parquet"
    frame.to_parquet(path)
    rows = import_table(
        path,
        tmp_path / "run",
        {
            "lr": "peak_lr",
            "loss": "val",
            "n_params": "params",
            "tokens_budget": "tokens",
            "batch_size_tokens": "bt",
        },
        constants={"seq_len": 2048, "schedule": "cosine"},
    )
    assert rows == 168
    table = read_trials(tmp_path / "run").to_pandas()
    assert (table["batch_size"] * 2048 == table["batch_size_tokens"]).all()
    assert set(table["schedule"]) == {"cosine"}


def test_generic_table_names_what_is_missing(tmp_path):
    path = tmp_path / "t.csv"
    _steplaw_frame().to_csv(path, index=False)
    with pytest.raises(ImportError_, match="seq_len"):
        import_table(
            path,
            tmp_path / "run",
            {"lr": "lr", "loss": "loss", "n_params": "Na", "tokens_budget": "D", "batch_size": "bs"},
        )
    with pytest.raises(ImportError_, match="columns not in"):
        import_table(path, tmp_path / "run", {"lr": "learning_rate"})
    with pytest.raises(ImportError_, match="not trial columns"):
        import_table(path, tmp_path / "run", {"learning_rate": "lr"})
    assert not (tmp_path / "run").exists()


def test_cli_import_table_and_errors(cli, tmp_path):
    path = tmp_path / "t.csv"
    _steplaw_frame().to_csv(path, index=False)
    args = [
        "import",
        "table",
        str(path),
        "--out",
        str(tmp_path / "run"),
        "--map",
        "lr=lr",
        "--map",
        "loss=smooth loss",
        "--map",
        "n_params=Na",
        "--map",
        "tokens_budget=D",
        "--map",
        "batch_size=bs",
        "--set",
        "seq_len=2048",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "imported 168 runs" in result.output
    result = CliRunner().invoke(
        cli, ["import", "table", str(path), "--out", str(tmp_path / "x"), "--map", "lr"]
    )
    assert result.exit_code == 2 and "COLUMN=VALUE" in result.stderr
    result = CliRunner().invoke(
        cli, ["import", "steplaw", str(tmp_path / "none.csv"), "--out", str(tmp_path / "y")]
    )
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: file not found: {tmp_path / 'none.csv'}"
    result = CliRunner().invoke(
        cli, ["import", "steplaw", str(path), "--size-column", "Nx", "--out", str(tmp_path / "z")]
    )
    assert result.exit_code == 2 and "lacks Step Law columns: Nx" in result.stderr
