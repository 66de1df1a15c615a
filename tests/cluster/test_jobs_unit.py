"""Fast checks of the cluster-side helpers: placement check, result mirror, job CLI bits."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from sweeper.execute import PlacementError, check_fits
from sweeper.execute.jobs import ResultMirror, _shell_word, http_address, last_progress_line
from sweeper.execute.metrics import SweepMetrics
from sweeper.recipe import Resources


def test_placement_check_accepts_what_some_node_holds() -> None:
    nodes = [{"CPU": 0.0}, {"CPU": 4.0, "GPU": 1.0}]
    check_fits(Resources(cpus=1, gpus=0.25), nodes)
    check_fits(Resources(cpus=4, gpus=1), nodes)
    with pytest.raises(PlacementError, match="no node can ever run a trial"):
        check_fits(Resources(cpus=1, gpus=2), nodes)
    with pytest.raises(PlacementError):
        check_fits(Resources(cpus=8), nodes)
    with pytest.raises(PlacementError, match="no nodes"):
        check_fits(Resources(cpus=1), [])


def test_mirror_copies_whole_files_only(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "trials").mkdir(parents=True)
    (run_dir / "trials" / "abc.parquet").write_bytes(b"x" * 1000)
    (run_dir / ".driver.lock").write_text("pid 1")
    (run_dir / "recipe.yaml").write_text("name: x\n")
    mirror = ResultMirror(f"file://{tmp_path / 'bucket'}", run_dir)
    mirror.put("trials/abc.parquet")
    assert (tmp_path / "bucket" / "trials" / "abc.parquet").read_bytes() == b"x" * 1000
    mirror.put_all()
    names = sorted(p.name for p in (tmp_path / "bucket").rglob("*"))
    assert names == ["abc.parquet", "recipe.yaml", "trials"]  # no lock, no temporaries


def test_job_cli_helpers() -> None:
    assert http_address("10.0.0.1:8265") == "http://10.0.0.1:8265"
    assert http_address("https://ray.example/") == "https://ray.example"
    assert _shell_word("$HOME/sweeper-runs/sweeper-a-1") == "$HOME/sweeper-runs/sweeper-a-1"
    assert _shell_word("$(rm -rf /)") == "'$(rm -rf /)'"
    logs = "sweep x\n[ 1/24] complete a\nnoise\n[2/24] diverged b\ndone\n"
    assert last_progress_line(logs) == "[2/24] diverged b"


def test_metrics_never_raise_without_a_cluster() -> None:
    metrics = SweepMetrics("unit")
    metrics.progress(pending=3, running=1, counts=Counter(complete=2))
    metrics.finished("cell-a", "complete", 3.2)
    metrics.finished("cell-a", "complete", float("nan"))
    assert metrics.best_loss.get("cell-a", 3.2) == 3.2


def test_mirror_follows_parts_and_compaction(tmp_path: Path) -> None:
    from sweeper.outcome import TrialOutcome
    from sweeper.plan import plan_trials
    from sweeper.recipe import parse_recipe
    from sweeper.results import ResultSink, compact_run
    from tests.conftest import MINIMAL_RECIPE

    run_dir, bucket = tmp_path / "run", tmp_path / "bucket"
    sink = ResultSink(run_dir)
    mirror = ResultMirror(f"file://{bucket}", run_dir)
    for spec in plan_trials(parse_recipe(MINIMAL_RECIPE), "data0"):
        sink.record(spec, TrialOutcome(spec.trial_id, "complete", 3.0, 3.0, 1, 1, 1.0, 0.0, 1.0))
        mirror.put_parts()
    assert sorted(p.name for p in (bucket / "trials").iterdir()) == [
        "000000000-part.parquet",
        "000000001-part.parquet",
    ]
    compact_run(run_dir)
    mirror.put_parts()
    for dataset in ("trials", "curves"):
        assert sorted(p.name for p in (bucket / dataset).iterdir()) == ["000000001-compact.parquet"]
    assert len(pd.read_parquet(bucket / "trials")) == 2
