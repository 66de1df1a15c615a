"""Cleaning a trials table into fit-ready cells, and selecting near-optimal runs.

Contract of `clean_trials(table)`:

* Only rows with status ``complete`` and a finite loss are fitted; every other row is counted
  by status (``Sweep.status_counts``). A complete row with a NaN/inf loss counts as diverged.
* Grid values written with different rounding (1.726e-04 vs 1.7264e-04) are one grid point:
  lr and batch values within ``snap_tolerance`` (relative) of each other are rewritten to one
  canonical value, the most frequent spelling (ties: the most precise one).
* Rows repeating a grid point of a cell (seeds, reruns) are averaged into one point.
* A run whose loss is more than ``divergence_ratio`` above its cell's best is counted as
  diverged and excluded (a run that blew up and recovered to a poor plateau is not a sample
  of the landscape near the optimum).
* A cell with fewer than ``min_runs`` points, or fewer than two learning rates or batch
  sizes, is excluded from the fit and listed in ``Sweep.excluded_cells`` with the reason.
* A cell whose optimum sits on the edge of its grid keeps its place in the fit but gets a
  loud flag: the grid did not bracket the optimum, so the optimum used is a bound. The
  optimum is located by a quadratic through the runs near the best, weighted by the noise
  floor (fit/quadratic.py), not by the best run: near the optimum, which run is best is a
  draw of the seed noise, and a flat valley reaching the grid's end would flag or clear a
  cell by that draw. "On the edge" is within half a grid step of the end, or beyond it.
* A cell with replicate seeds carries its noise floor (``Cell.noise``, fit/noise.py); when
  one run's noise is wider than the near-optimal band (``NEAR_OPTIMAL_BAND``) it is flagged:
  the runs inside the band cannot be ranked by single seeds.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from sweeper.fit.data import Cell, FitError, Sweep
from sweeper.fit.noise import band_inside_noise, noise_width, replicate_noise
from sweeper.fit.quadratic import QUADRATIC_BAND, QUADRATIC_MIN_POINTS, quadratic_optima
from sweeper.outcome import TrialStatus

NEAR_OPTIMAL_BAND = 0.0025  # Step Law's near-optimal set: within 0.25% of the best loss


@dataclass(frozen=True)
class CleaningOptions:
    snap_tolerance: float = 5e-3  # relative; grids are spaced by >= ~10%, roundings by < 0.1%
    divergence_ratio: float = 0.5  # loss > best * (1 + ratio) counts as diverged
    min_runs: int = 5  # fewer grid points than this: the cell's optimum is not located


def snap_grid_values(values: np.ndarray, tolerance: float) -> tuple[np.ndarray, int]:
    """Rewrite values equal up to ``tolerance`` (relative) to one canonical spelling.

    Returns the snapped array and how many entries changed. Clusters are runs of sorted
    log-values whose neighbours are closer than log(1 + tolerance)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return values, 0
    distinct = np.unique(values)
    logs = np.log(distinct)
    breaks = np.flatnonzero(np.diff(logs) > np.log1p(tolerance)) + 1
    counts = Counter(values.tolist())
    canonical: dict[float, float] = {}
    for cluster in np.split(distinct, breaks):
        # Most frequent spelling wins; ties go to the longest repr (the most digits).
        chosen = max(cluster.tolist(), key=lambda v: (counts[v], len(repr(v))))
        for member in cluster.tolist():
            canonical[member] = chosen
    snapped = np.array([canonical[v] for v in values.tolist()])
    return snapped, int(np.sum(snapped != values))


def near_optimal_mask(loss: np.ndarray, threshold: float) -> np.ndarray:
    """Step Law's near-optimal set: runs within ``threshold`` (relative) of the best loss."""
    best = np.min(loss)
    return loss <= best * (1.0 + threshold)


def _column(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False))


def _float_column(table: pa.Table, name: str) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in table.column(name).to_pylist()], float)


def clean_trials(table: pa.Table, options: CleaningOptions = CleaningOptions()) -> Sweep:
    """Trials table (TRIALS_SCHEMA) -> cleaned `Sweep`. Raises FitError when nothing fits."""
    if table.num_rows == 0:
        raise FitError("no trials found (the run folder has no trials/ rows)")
    status = np.array([s or "unknown" for s in table.column("status").to_pylist()], dtype=object)
    status_counts = dict(Counter(status.tolist()))
    loss = _float_column(table, "loss")
    complete = status == TrialStatus.COMPLETE.value
    nonfinite = complete & ~np.isfinite(loss)
    if nonfinite.any():
        # The row says complete but the loss is not a number: it diverged, count it so.
        diverged, complete_key = TrialStatus.DIVERGED.value, TrialStatus.COMPLETE.value
        status_counts[diverged] = status_counts.get(diverged, 0) + int(nonfinite.sum())
        status_counts[complete_key] -= int(nonfinite.sum())
    usable = complete & np.isfinite(loss)
    if not usable.any():
        summary = ", ".join(f"{k}: {v}" for k, v in sorted(status_counts.items()))
        raise FitError(f"no complete trials with a finite loss to fit ({summary})")

    sub = table.filter(pa.array(usable))
    loss = loss[usable]
    lr = _float_column(sub, "lr")
    batch_tokens = _float_column(sub, "batch_size_tokens")
    batch_seqs = _float_column(sub, "batch_size")
    seq_len = _float_column(sub, "seq_len")
    missing_bt = ~np.isfinite(batch_tokens)
    batch_tokens[missing_bt] = batch_seqs[missing_bt] * seq_len[missing_bt]
    n_params = _float_column(sub, "n_params")
    tokens = _float_column(sub, "tokens_budget")
    flops = _float_column(sub, "flops_per_token")
    for name, column in (
        ("lr", lr),
        ("batch_size_tokens", batch_tokens),
        ("n_params", n_params),
        ("tokens_budget", tokens),
        ("seq_len", seq_len),
    ):
        bad = ~(np.isfinite(column) & (column > 0))
        if bad.any():
            raise FitError(f"{int(bad.sum())} complete trials have no positive '{name}'")

    lr, snapped_lr = snap_grid_values(lr, options.snap_tolerance)
    batch_tokens, snapped_b = snap_grid_values(batch_tokens, options.snap_tolerance)

    warnings: list[str] = []
    schedules = {s for s in sub.column("schedule").to_pylist() if s}
    schedule = _common_schedule(sub)
    if len(schedules) > 1:
        warnings.append(
            f"runs from {len(schedules)} schedules are mixed in one fit ({', '.join(sorted(schedules))});"
            " their optima are not comparable"
        )
    sweep_names = [s for s in sub.column("sweep").to_pylist() if s]
    name = Counter(sweep_names).most_common(1)[0][0] if sweep_names else "sweep"

    # A cell is (N, D, seq_len): the law's coordinates, whatever the cell ids say.
    keys = list(zip(n_params.tolist(), tokens.tolist(), seq_len.tolist()))
    cell_ids = sub.column("cell_id").to_pylist()
    groups: dict[tuple, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)

    cells: list[Cell] = []
    excluded: list[dict] = []
    for (n, d, s), rows in sorted(groups.items()):
        rows_arr = np.array(rows)
        cell = _make_cell(
            cell_id=cell_ids[rows[0]] or f"N{n:.3g}-D{d:.3g}",
            n=n,
            d=d,
            s=int(s),
            m=_first_finite(flops[rows_arr]),
            lr=lr[rows_arr],
            batch=batch_tokens[rows_arr],
            loss=loss[rows_arr],
            options=options,
        )
        reason = _exclusion_reason(cell, options)
        if reason:
            excluded.append(
                {
                    "cell_id": cell.cell_id,
                    "n_params": n,
                    "tokens": d,
                    "runs": int(cell.loss.size),
                    "reason": reason,
                }
            )
            continue
        cell.located = _locate_optimum(cell)
        sides = cell.edge()
        if sides:
            where = (
                "the optimum (a quadratic through the runs near the best) lies within half a grid"
                " step of the "
                if cell.located is not None
                else "best run at the "
            )
            cell.flags.append(
                "EDGE OF GRID: " + where + " and ".join(sides) + " end of the grid; the"
                " grid did not bracket the optimum, so this cell's optimum is only a bound"
                + _edge_leads(cell, sides)
            )
        if band_inside_noise(NEAR_OPTIMAL_BAND, cell.noise):
            assert cell.noise is not None
            cell.flags.append(
                f"NOISE: one run's seed-to-seed spread near the optimum is {cell.noise.sd:.4f} nats"
                f" ({cell.noise.relative:.2%}), wider than the near-optimal band"
                f" ({NEAR_OPTIMAL_BAND:.2%}); single runs inside it cannot be ranked"
            )
        cells.append(cell)
    if not cells:
        reasons = "; ".join(f"{e['cell_id']}: {e['reason']}" for e in excluded[:4])
        raise FitError(f"no cell has enough runs to locate an optimum ({reasons})")
    return Sweep(
        name=name,
        cells=cells,
        status_counts=status_counts,
        excluded_cells=excluded,
        warnings=warnings,
        snapped_values=snapped_lr + snapped_b,
        schedule=schedule,
    )


SCHEDULE_COLUMNS = {
    "schedule": "kind",
    "warmup_fraction": "warmup_fraction",
    "min_lr_ratio": "min_lr_ratio",
    "decay_fraction": "decay_fraction",
}


def _common_schedule(table: pa.Table) -> dict | None:
    """The proxies' schedule when every fitted run shares one (kind and its known fractions),
    so a target run can reuse it; None when they differ or nothing is recorded. A warmup
    given in steps is recorded as its count: the largest ``warmup_steps`` of the runs (a run
    shorter than the count warmed up over all its steps)."""
    settings = {
        tuple(row[c] for c in SCHEDULE_COLUMNS) for row in table.select(list(SCHEDULE_COLUMNS)).to_pylist()
    }
    if len(settings) != 1:
        return None
    values = dict(zip(SCHEDULE_COLUMNS.values(), settings.pop()))
    if not values["kind"]:
        return None
    if values["warmup_fraction"] is None and "warmup_steps" in table.column_names:
        counts = [c for c in table.column("warmup_steps").to_pylist() if c is not None]
        values["warmup_steps"] = max(counts) if counts else None
    return {k: v for k, v in values.items() if v is not None}


def _first_finite(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values) & (values > 0)]
    return float(finite[0]) if finite.size else None


def _make_cell(
    *,
    cell_id: str,
    n: float,
    d: float,
    s: int,
    m: float | None,
    lr: np.ndarray,
    batch: np.ndarray,
    loss: np.ndarray,
    options: CleaningOptions,
) -> Cell:
    # Average replicates of one grid point (seeds, reruns) into one point of the landscape.
    points: dict[tuple[float, float], list[float]] = {}
    for x, b, value in zip(lr.tolist(), batch.tolist(), loss.tolist()):
        points.setdefault((x, b), []).append(value)
    grid = sorted(points)
    point_lr = np.array([g[0] for g in grid])
    point_b = np.array([g[1] for g in grid])
    point_loss = np.array([np.mean(points[g]) for g in grid])
    replicates = np.array([len(points[g]) for g in grid])
    keep = point_loss <= point_loss.min() * (1.0 + options.divergence_ratio)
    return Cell(
        cell_id=cell_id,
        n_params=n,
        tokens=d,
        seq_len=s,
        flops_per_token=m,
        lr=point_lr[keep],
        batch_tokens=point_b[keep],
        loss=point_loss[keep],
        replicates=replicates[keep],
        excluded_diverged=int(replicates[~keep].sum()),
        noise=replicate_noise(lr, batch, loss),
    )


def _exclusion_reason(cell: Cell, options: CleaningOptions) -> str | None:
    if cell.loss.size < options.min_runs:
        return f"too few runs ({cell.loss.size} < {options.min_runs})"
    if np.unique(cell.lr).size < 2:
        return "only one learning rate: its optimum is not located"
    if np.unique(cell.batch_tokens).size < 2:
        return "only one batch size: its optimum is not located"
    return None


def _locate_optimum(cell: Cell) -> tuple[float, float] | None:
    """(log lr, log B) of the cell's optimum by the noise-weighted quadratic, clipped to the
    grid; None where no convex quadratic fits (the best run then stands for it)."""
    z, _, convex, _ = quadratic_optima(
        cell.log_lr,
        cell.log_batch,
        cell.loss,
        np.ones((1, cell.loss.size)),
        noise_width(QUADRATIC_BAND, cell.noise),
        QUADRATIC_MIN_POINTS,
    )
    return (float(z[0, 0]), float(z[0, 1])) if convex[0] else None


def _edge_leads(cell: Cell, sides: list[str]) -> str:
    """What the runs one grid value in say about each edge, against the noise floor when
    replicate seeds measured one: the user's next grid extends past a clear edge; a tie
    inside the noise is a flat valley reaching the edge, where a wider grid may still tie."""
    notes = []
    for side in sides:
        lead = cell.edge_lead(side)
        name = side.split()[0]
        if lead < 0:
            notes.append(
                f"the next {name} in is {-lead:.4f} nats ahead of the end's best run, but the"
                " runs around the best lean toward the end"
            )
        elif cell.noise is None:
            notes.append(f"the next {name} in is {lead:.4f} nats behind")
        elif lead <= cell.noise.sd:
            notes.append(
                f"the next {name} in is {lead:.4f} nats behind, inside the seed noise of"
                f" {cell.noise.sd:.4f}: a tie, the flat valley reaches the edge"
            )
        else:
            notes.append(
                f"the next {name} in is {lead:.4f} nats behind, beyond the seed noise of {cell.noise.sd:.4f}"
            )
    return " (" + "; ".join(notes) + ")"
