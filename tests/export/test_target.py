"""The target-scale run: shape rule (pure), lock refusal (no Ray), and one real tiny bracket
on a local Ray cluster, recorded in Parquet with status target and re-used on a rerun."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from sweeper.errors import SweeperError
from sweeper.hparams import load_hparams
from sweeper.plan import Cell, make_trial
from sweeper.recipe import load_recipe
from sweeper.results import read_trials
from sweeper.runfolder import RunFolderLock
from sweeper.target import family_shape, plan_points, run_target

from .conftest import DATA


def smoke_recipe():
    return load_recipe(DATA / "recipe.yaml")


@pytest.mark.parametrize("n_params", [3e3, 5e4, 2e6])
def test_family_shape_is_nearest_multiple_of_heads(n_params: float) -> None:
    recipe = smoke_recipe()
    shape = family_shape(recipe, n_params)
    template = recipe.models[-1]
    assert (shape.n_layers, shape.n_heads, shape.seq_len, shape.vocab_size) == (
        template.n_layers,
        template.n_heads,
        template.seq_len,
        template.vocab_size,
    )
    assert shape.d_model % shape.n_heads == 0
    step = shape.n_heads
    for other in (shape.d_model - step, shape.d_model + step):
        if other > 0:
            neighbour = template.model_copy(update={"d_model": other})
            assert abs(math.log(shape.n_params_nonembedding / n_params)) <= abs(
                math.log(neighbour.n_params_nonembedding / n_params)
            )


def test_bracket_points_and_ids() -> None:
    recipe = smoke_recipe()
    shape = family_shape(recipe, 5e4)
    prediction = load_hparams(DATA / "fit.json").predict(shape.n_params_nonembedding, 8000, 32)
    points = plan_points(recipe, shape, 8000, prediction, "data", bracket=True)
    assert [p.label for p in points] == ["predicted", "lr x1/2", "lr x2", "B x1/2", "B x2"]
    assert (
        points[1].lr == pytest.approx(prediction.lr / 2) and points[4].batch_size == 2 * points[0].batch_size
    )
    assert len({p.spec.trial_id for p in points}) == 5
    # A target id never equals the proxy trial id of the same settings.
    cell = Cell(points[0].spec.cell_id, shape, 8000)
    proxy = make_trial(recipe, cell, points[0].lr, points[0].batch_size, 0, "data")
    assert proxy.trial_id != points[0].spec.trial_id


def test_busy_folder_exit_3(tmp_path: Path) -> None:
    lock = RunFolderLock(tmp_path / "t")
    lock.acquire()
    try:
        with pytest.raises(SweeperError) as raised:
            run_target(smoke_recipe(), DATA / "fit.json", 5e4, 4000, tmp_path / "t")
        assert raised.value.exit_code == 3
    finally:
        lock.release()


def test_target_bracket_runs_and_records(tmp_path: Path) -> None:
    run_dir = tmp_path / "target"
    report = run_target(smoke_recipe(), DATA / "fit.json", 2e4, 4000, run_dir, bracket=True, num_cpus=2)
    assert len(report.points) == 5
    rows = read_trials(run_dir).table.to_pylist()
    assert sorted(r["trial_id"] for r in rows) == sorted(p.spec.trial_id for p in report.points)
    assert {r["status"] for r in rows} <= {"target", "diverged"} and "target" in {r["status"] for r in rows}
    assert all(r["n_params"] == report.shape.n_params_nonembedding for r in rows)
    table = report.table()
    assert "regret of the prediction" in table and "B x1/2" in table
    assert report.regret >= 0.0
    assert (run_dir / "target.json").is_file()
    # Rerun: every point is already recorded, nothing trains (no Ray started).
    again = run_target(smoke_recipe(), DATA / "fit.json", 2e4, 4000, run_dir, bracket=True)
    assert again.reused == 5 and again.regret == pytest.approx(report.regret)


def test_bracket_seeds_average_and_spread() -> None:
    from sweeper.outcome import TrialOutcome
    from sweeper.target import TargetReport, target_seeds

    recipe = smoke_recipe()
    shape = family_shape(recipe, 5e4)
    prediction = load_hparams(DATA / "fit.json").predict(shape.n_params_nonembedding, 8000, 32)
    seeds = target_seeds(recipe, 2)
    assert seeds == [recipe.seeds[0], recipe.seeds[0] + 1]
    points = plan_points(recipe, shape, 8000, prediction, "data", bracket=True, seeds=seeds)
    assert len(points) == 10 and len({p.spec.trial_id for p in points}) == 10
    assert [p.seed for p in points[:2]] == seeds and points[0].label == points[1].label == "predicted"
    # seed 0's ids are those of a one-seed bracket: a rerun with --seeds 2 re-uses them.
    single = plan_points(recipe, shape, 8000, prediction, "data", bracket=True)
    assert {p.spec.trial_id for p in single} <= {p.spec.trial_id for p in points}
    losses = {
        "predicted": (2.0, 2.1),
        "lr x1/2": (2.2, 2.2),
        "lr x2": (1.9, 2.1),
        "B x1/2": (2.3, 2.4),
        "B x2": (2.5, 2.5),
    }
    for point in points:
        loss = losses[point.label][point.seed - seeds[0]]
        point.outcome = TrialOutcome(point.spec.trial_id, "target", loss, loss, 1, 1, 1.0, 0.0, 1.0)
    report = TargetReport(Path("."), 5e4, shape, 8000, prediction, points)
    assert [s.label for s in report.settings()] == list(losses)
    assert report.predicted.loss == pytest.approx(2.05) and report.best.label == "lr x2"
    assert report.regret == pytest.approx(0.05)
    assert report.seed_spread == pytest.approx(0.2)
    assert "seed spread" in report.table() and report.to_dict()["seed_spread"] == pytest.approx(0.2)
