"""sweeper replay: a sweep answered from a recorded table, through the real driver, Optuna
journal and Parquet sink. Tables: a synthetic run folder with known laws, and the real
Step Law CSV (slow)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from sweeper.fit import fit_run
from sweeper.replay import REPLAY_FILE, run_replay
from sweeper.results import ResultSink
from sweeper.schedule import STUDY_FILE
from tests.conftest import STEPLAW_CSV
from tests.test_adaptive import BATCHES, LRS, SEQ_LEN, loss_at

GRID_LRS = LRS[2:10]  # 8 x 4 per cell: small, so every replay here takes seconds
GRID_BATCHES = BATCHES[1:5]


def write_table(
    run_dir: Path,
    ns: tuple = (1e6, 4e6),
    ds: tuple = (1e8, 4e8, 1.6e9),
    lrs: tuple = GRID_LRS,
    batches: tuple = GRID_BATCHES,
) -> int:
    """Cells of a full lr x batch grid, losses from tests.test_adaptive's landscape."""
    rows = []
    for n in ns:
        for d in ds:
            for lr in lrs:
                for batch_size in batches:
                    rows.append(
                        {
                            "trial_id": f"t{len(rows)}",
                            "sweep": "synthetic",
                            "cell_id": f"n{n:.0e}-d{d:.0e}",
                            "n_params": int(n),
                            "tokens_budget": int(d),
                            "seq_len": SEQ_LEN,
                            "lr": lr,
                            "batch_size": batch_size,
                            "batch_size_tokens": batch_size * SEQ_LEN,
                            "status": "complete",
                            "loss": loss_at(n, d, lr, batch_size),
                            "schedule": "cosine",
                        }
                    )
    ResultSink(run_dir).record_rows(rows, "table")
    return len(rows)


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("table") / "synthetic"
    write_table(folder)
    return folder


class Stop(Exception):
    pass


def _points(run_dir: Path) -> set[tuple]:
    trials = pd.read_parquet(run_dir / "trials")
    return set(zip(trials.cell_id, trials.lr, trials.batch_size))


def test_grid_replays_every_recorded_point_with_its_loss(tmp_path: Path) -> None:
    table = tmp_path / "small"
    write_table(table, ns=(1e6,), ds=(1e8, 4e8), lrs=GRID_LRS[:4], batches=GRID_BATCHES[:2])
    report = run_replay(table, tmp_path / "grid", search="grid")
    assert report.trials_run == report.recorded_points == 2 * 4 * 2
    assert not report.missing
    recorded = pd.read_parquet(table / "trials").set_index(["cell_id", "lr", "batch_size"])["loss"]
    replayed = pd.read_parquet(tmp_path / "grid" / "trials").set_index(["cell_id", "lr", "batch_size"])[
        "loss"
    ]
    assert replayed.sort_index().equals(recorded.sort_index())


def test_adaptive_replay_stays_within_budget_and_fits(table: Path, tmp_path: Path) -> None:
    report = run_replay(table, tmp_path / "adaptive", budget=0.5)
    assert 0 < report.trials_run <= 0.5 * report.recorded_points
    trials = pd.read_parquet(tmp_path / "adaptive" / "trials")
    assert trials.n_params.isin([1_000_000, 4_000_000]).all()  # the table's own N
    assert trials.cell_id.nunique() == 6
    fit = fit_run(tmp_path / "adaptive", n_bootstrap=0, evaluate=True, plots=False)
    assert fit.document()["evaluation"]  # `fit --evaluate` applies to a replayed folder
    assert (tmp_path / "adaptive" / REPLAY_FILE).is_file()


@pytest.fixture(scope="module")
def whole(table: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("whole") / "run"
    run_replay(table, out, budget=0.5)
    return out


@pytest.mark.parametrize("study_lost", [False, True], ids=["study-kept", "study-lost"])
def test_an_interrupted_replay_resumes_to_the_same_proposals(
    table: Path, whole: Path, tmp_path: Path, study_lost: bool
) -> None:
    finished = []

    def crash_after_ten(spec, outcome, counts) -> None:  # noqa: ANN001
        finished.append(spec.trial_id)
        if len(finished) == 10:
            raise Stop  # the driver dies with trials in flight

    with pytest.raises(Stop):
        run_replay(table, tmp_path / "cut", budget=0.5, on_trial=crash_after_ten)
    assert len(pd.read_parquet(tmp_path / "cut" / "trials")) == 10
    if study_lost:  # the Parquet record alone rebuilds the sampler's state
        (tmp_path / "cut" / STUDY_FILE).unlink()
    run_replay(table, tmp_path / "cut", budget=0.5)
    assert _points(tmp_path / "cut") == _points(whole)


def test_replay_of_a_missing_table_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sweeper",
            "replay",
            str(tmp_path / "none.csv"),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_adaptive_replay_of_the_step_law_table(tmp_path: Path) -> None:
    report = run_replay(STEPLAW_CSV, tmp_path / "moe", size_column="Na", budget=0.25)
    assert report.recorded_points == 708
    assert report.trials_run <= 0.25 * 708
    trials = pd.read_parquet(tmp_path / "moe" / "trials")
    assert trials.cell_id.nunique() == 16  # every cell of the ladder gets runs
    assert (trials.status == "complete").sum() + len(report.missing) == report.trials_run
