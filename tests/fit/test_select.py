"""Cleaning real-world tables: rounding, diverged runs, thin cells, grid-edge optima."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from sweeper.fit import FitError, build_report, clean_trials
from sweeper.fit.select import near_optimal_mask, snap_grid_values
from sweeper.results.schema import TRIALS_SCHEMA
from tests.fit.synthetic import synthetic_rows


def _table(rows):
    return pa.Table.from_pylist(rows, schema=TRIALS_SCHEMA)


def test_snap_merges_roundings_of_one_grid_value():
    values = np.array([1.726e-04, 1.7264e-04, 1.7264e-04, 2.441e-04, 3.4527e-04, 3.453e-04])
    snapped, changed = snap_grid_values(values, 5e-3)
    assert np.unique(snapped).tolist() == [1.7264e-04, 2.441e-04, 3.4527e-04]
    assert changed == 2


def test_snap_keeps_distinct_grid_values_apart():
    values = np.array([1.0e-3, 1.1e-3, 1.2e-3])  # a 10% grid: three points
    snapped, changed = snap_grid_values(values, 5e-3)
    assert changed == 0 and np.unique(snapped).size == 3


def test_near_optimal_is_within_a_quarter_percent():
    loss = np.array([2.0, 2.004, 2.005, 2.0051, 2.5])
    assert near_optimal_mask(loss, 0.0025).tolist() == [True, True, True, False, False]


def test_rounded_replicates_become_one_grid_point():
    rows = synthetic_rows(sizes=(1e6, 1e7), budgets=(1e8, 1e9), n_lr=5, n_b=3)
    copy = dict(rows[0])
    copy.update(trial_id="dup", lr=float(f"{rows[0]['lr']:.4g}"), loss=rows[0]["loss"] + 0.01)
    sweep = clean_trials(_table(rows + [copy]))
    first = sweep.cells[0]
    assert first.loss.size == 15
    assert first.replicates.max() == 2
    assert sweep.snapped_values >= 1


def test_diverged_runs_are_excluded_and_counted():
    rows = synthetic_rows(sizes=(1e6, 1e7), budgets=(1e8, 1e9), n_lr=5, n_b=3)
    rows[0]["loss"] = float("nan")  # says complete, but the loss is NaN
    rows[1]["loss"] = rows[1]["loss"] * 3.0  # far above the cell's best
    rows[2]["status"], rows[2]["loss"] = "diverged", None
    rows[3]["status"], rows[3]["loss"] = "failed", None
    sweep = clean_trials(_table(rows))
    assert sweep.status_counts["diverged"] == 2
    assert sweep.status_counts["failed"] == 1
    assert sweep.n_diverged == 1
    assert sweep.n_runs == len(rows) - 4


def test_thin_cells_are_excluded_with_a_reason():
    rows = synthetic_rows(sizes=(1e6, 1e7, 1e8), budgets=(1e8, 1e9), n_lr=5, n_b=3)
    thin = [r for r in rows if r["n_params"] == int(1e8) and r["tokens_budget"] == int(1e9)]
    rows = [r for r in rows if r not in thin] + thin[:3]
    sweep = clean_trials(_table(rows))
    assert len(sweep.cells) == 5
    assert sweep.excluded_cells[0]["reason"].startswith("too few runs (3")


def test_edge_of_grid_optimum_is_flagged_loudly():
    # Grids shifted 3 steps up: every cell's best lr sits at the grid's low edge.
    rows = synthetic_rows(sizes=(1e6, 1e7, 1e8), budgets=(1e8, 1e9), n_lr=5, n_b=5, offset=0.0, lr_shift=3.0)
    sweep = clean_trials(_table(rows))
    assert all(any("EDGE OF GRID" in f and "lr low" in f for f in c.flags) for c in sweep.cells)
    report = build_report(sweep, estimator="plateau", n_bootstrap=20, evaluate=False, seed=0, loss_law=False)
    text = report.summary()
    assert "WARNINGS:" in text and text.count("EDGE OF GRID") == len(sweep.cells)
    assert all(c["flags"] for c in report.document()["cells"])


def test_mixed_schedules_are_reported():
    rows = synthetic_rows(sizes=(1e6, 1e7), budgets=(1e8, 1e9), n_lr=5, n_b=3)
    rows[0]["schedule"] = "wsd"
    assert any("schedules are mixed" in w for w in clean_trials(_table(rows)).warnings)


def test_no_complete_trials_is_a_fit_error():
    rows = synthetic_rows(sizes=(1e6,), budgets=(1e8,), n_lr=3, n_b=2)
    for row in rows:
        row["status"] = "pruned"
    with pytest.raises(FitError, match="no complete trials"):
        clean_trials(_table(rows))


def test_cells_are_keyed_by_n_d_and_seq_len():
    rows = synthetic_rows(sizes=(1e6, 1e7), budgets=(1e8, 1e9), n_lr=5, n_b=3)
    sweep = clean_trials(_table(rows))
    assert [(c.n_params, c.tokens) for c in sweep.cells] == [(1e6, 1e8), (1e6, 1e9), (1e7, 1e8), (1e7, 1e9)]
    assert all(math.isclose(c.flops_per_token, 6 * c.n_params + 12 * 4 * 128 * 256) for c in sweep.cells)


def _edge_cell_flag(inner_loss: float) -> str:
    """One cell whose best run sits at the smallest batch, replicated over two seeds whose
    losses differ by 0.02 nats everywhere (noise sd 0.0141), with the next batch in at
    ``inner_loss`` (the best is 2.0)."""
    from tests.fit.synthetic import _row

    landscape = {
        (1e-3, 1): 2.05, (2e-3, 1): 2.0, (4e-3, 1): 2.06,
        (1e-3, 2): 2.07, (2e-3, 2): inner_loss, (4e-3, 2): 2.08,
        (1e-3, 4): 2.12, (2e-3, 4): 2.10, (4e-3, 4): 2.11,
    }  # fmt: skip
    rows = []
    for seed, shift in ((0, -0.01), (1, 0.01)):
        for (lr, batch), loss in landscape.items():
            row = _row(1e6, 1e8, 32, lr, batch, loss + shift, len(rows))
            row["seed"] = seed
            rows.append(row)
    (cell,) = clean_trials(_table(rows)).cells
    (flag,) = [f for f in cell.flags if f.startswith("EDGE OF GRID")]
    return flag


def test_an_edge_says_whether_the_next_value_in_is_a_tie_inside_the_noise():
    tie = _edge_cell_flag(2.004)
    assert "B low" in tie and "0.0040 nats behind" in tie and "a tie" in tie
    clear = _edge_cell_flag(2.09)
    assert (
        "0.0700 nats behind, beyond the seed noise" in clear
    )  # (1e-3, 2 sequences) and "a tie" not in clear


def _bowl_cell(b_opt_steps: float, tie: float):
    """One cell on a 5 lr x 6 batch grid (factors of 2), 2 seeds 0.02 nats apart: a bowl in
    (log2 lr, log2 B) with its lowest point ``b_opt_steps`` grid steps above the smallest
    batch, flat along lr ~ B near the low end (the demo's valley). The two runs at the
    smallest and next batch, best lr, are set to 2.0 and 2.0 + ``tie``."""
    from tests.fit.synthetic import _row

    rows = []
    for seed, shift in ((0, -0.01), (1, 0.01)):
        for i, lr in enumerate([5e-4, 1e-3, 2e-3, 4e-3, 8e-3]):
            for j, batch in enumerate([1, 2, 4, 8, 16, 32]):
                along, across = (j - b_opt_steps), (i - 2) - 0.5 * (j - b_opt_steps)
                loss = 2.0 + 0.006 * along**2 + 0.03 * across**2
                if (i, j) == (2, 0):
                    loss = 2.0 + 0.006 * b_opt_steps**2
                if (i, j) == (2, 1):
                    loss = 2.0 + 0.006 * b_opt_steps**2 + tie
                row = _row(1e6, 1e8, 16, lr, batch, loss + shift, len(rows))
                row["seed"] = seed
                rows.append(row)
    (cell,) = clean_trials(_table(rows)).cells
    return cell


@pytest.mark.parametrize("tie", [-1e-6, 1e-6])
def test_the_grid_edge_verdict_does_not_hinge_on_a_tie_s_last_digits(tie: float) -> None:
    # Inside: the optimum 0.8 grid steps above the smallest batch, the best run at the edge
    # or one step in depending on the sign of a one-in-a-million difference: never flagged.
    inside = _bowl_cell(0.8, tie)
    assert inside.edge() == [] and not any("EDGE" in f for f in inside.flags)
    assert inside.located is not None and np.exp(inside.located[1]) > 16 * 2**0.5
    # Beyond: the optimum a step below the smallest batch: flagged whichever run wins the tie.
    beyond = _bowl_cell(-1.0, tie)
    assert "B low" in beyond.edge()
    (flag,) = [f for f in beyond.flags if f.startswith("EDGE OF GRID")]
    assert "within half a grid step of the B low end" in flag
