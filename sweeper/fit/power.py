"""The Power scheduler's law, fitted on a WSD sweep over batch sizes and token budgets.

Shen et al. 2024 ("Power Scheduler: A Batch Size and Token Number Agnostic Learning Rate
Scheduler") found that under a warmup-stable-decay schedule the optimal learning rate
follows lr_opt = B * a * D^b: linear in the batch size B and a power of the training tokens D
(b < 0), with a and b nearly independent of the model size (exactly so under μP). The Power
scheduler then uses lr(n) = min(lr_max, B * a * n^b) with n the tokens seen so far, which needs
no retuning for the number of tokens or the batch.

Here B is in tokens (the project's unit for batches) and D in tokens, so ``a`` differs from
the paper's by the sequence length its batches were counted in. The fit:

1. For every (cell, batch size) with at least three learning rates, the optimal lr: the best
   run's lr, refined by a parabola in log lr through it and its two neighbours (clipped to
   them). Optima on the edge of the lr grid are bounds, not optima, and are left out (counted).
2. log(lr_opt / B) = log a + b log D by least squares over those points (the paper's law, the
   batch exponent fixed at 1), and, as a check of that assumption, the free fit
   log lr_opt = k + c log B + b' log D, whose c should come out near 1.
3. Intervals: bootstrap over cells (a cell's points move together), percentile 95%; replicates
   with fewer than two distinct D cannot fit b and are discarded and counted.

``lr_max`` for a target is the largest optimal lr measured (the schedule never goes above a
rate the proxies found optimal), which the user can override on the trainer side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sweeper.fit.data import Sweep

SOURCE = "Shen et al. 2024, Power Scheduler: lr_opt = B * a * D^b under WSD (B, D in tokens)"
MIN_LRS = 3  # a parabola through the best lr and its two neighbours


@dataclass
class PowerPoint:
    cell_id: str
    tokens: float
    batch_tokens: float
    lr_opt: float


@dataclass
class PowerSchedulerFit:
    """lr_opt = B * a * D^b, with the free batch exponent as a check."""

    log_a: float
    b: float
    bootstrap: np.ndarray  # (R, 2): log a, b of each valid replicate
    n_discarded: int
    points: list[PowerPoint]
    edge_points: int
    free_batch_exponent: float | None
    r2: float

    @property
    def a(self) -> float:
        return math.exp(self.log_a)

    @property
    def lr_max(self) -> float:
        return max(point.lr_opt for point in self.points)

    def interval(self, level: float = 0.95) -> dict[str, list[float] | None]:
        if len(self.bootstrap) < 2:
            return {"a": None, "b": None}  # undetermined: too few valid replicates
        tail = 50.0 * (1.0 - level)
        lo, hi = np.percentile(self.bootstrap, [tail, 100.0 - tail], axis=0)
        return {"a": [math.exp(lo[0]), math.exp(hi[0])], "b": [float(lo[1]), float(hi[1])]}

    def to_dict(self) -> dict[str, Any]:
        total = len(self.bootstrap) + self.n_discarded
        return {
            "formula": "lr_opt = B * a * D^b (B: batch in tokens, D: training tokens)",
            "schedule": "lr(n) = min(lr_max, B * a * n^b), n = tokens seen; warmup and wsd decay",
            "source": SOURCE,
            "a": self.a,
            "b": self.b,
            "intervals": self.interval(),
            "interval_level": 0.95,
            "lr_max": self.lr_max,
            "r2": self.r2,
            "free_batch_exponent": self.free_batch_exponent,
            "n_points": len(self.points),
            "n_cells": len({point.cell_id for point in self.points}),
            "edge_points_excluded": self.edge_points,
            "n_bootstrap": len(self.bootstrap),
            "bootstrap_discarded_share": self.n_discarded / total if total else None,
            "points": [
                {
                    "cell_id": p.cell_id,
                    "tokens": p.tokens,
                    "batch_size_tokens": p.batch_tokens,
                    "lr_opt": p.lr_opt,
                }
                for p in self.points
            ],
        }

    def summary_lines(self) -> list[str]:
        iv = self.interval()

        def span(name: str, fmt: str) -> str:
            bounds = iv[name]
            return "UNDETERMINED" if bounds is None else f"[{bounds[0]:{fmt}}, {bounds[1]:{fmt}}]"

        free = (
            ""
            if self.free_batch_exponent is None
            else f"; batch exponent fitted freely: {self.free_batch_exponent:.2f} (the law assumes 1)"
        )
        return [
            f"Power scheduler law: lr_opt = B * a * D^b  ({SOURCE})",
            f"  a = {self.a:.4g}  95% interval {span('a', '.4g')}",
            f"  b = {self.b:.4f}  95% interval {span('b', '.4f')}",
            f"  R^2 = {self.r2:.3f} on {len(self.points)} (cell, batch) optima;"
            f" {self.edge_points} optima on the lr grid's edge left out{free}",
        ]


def batch_optima(sweep: Sweep) -> tuple[list[PowerPoint], int]:
    """The optimal lr of every (cell, batch size) with >= MIN_LRS learning rates, and how many
    such optima sat on the edge of their lr grid (left out)."""
    points, edges = [], 0
    for cell in sweep.cells:
        for batch in np.unique(cell.batch_tokens):
            mask = cell.batch_tokens == batch
            order = np.argsort(cell.lr[mask])
            log_lr, loss = np.log(cell.lr[mask][order]), cell.loss[mask][order]
            if log_lr.size < MIN_LRS:
                continue
            best = int(np.argmin(loss))
            if best in (0, log_lr.size - 1):
                edges += 1
                continue
            points.append(
                PowerPoint(
                    cell.cell_id,
                    cell.tokens,
                    float(batch),
                    math.exp(_parabola_vertex(log_lr[best - 1 : best + 2], loss[best - 1 : best + 2])),
                )
            )
    return points, edges


def _parabola_vertex(x: np.ndarray, y: np.ndarray) -> float:
    """Vertex of the parabola through three points (x sorted, middle one lowest), clipped to
    the outer two; the middle x when the three are collinear."""
    (x0, x1, x2), (y0, y1, y2) = x, y
    denominator = (x1 - x0) * (y1 - y2) - (x1 - x2) * (y1 - y0)
    if denominator == 0:
        return float(x1)
    vertex = x1 - 0.5 * ((x1 - x0) ** 2 * (y1 - y2) - (x1 - x2) ** 2 * (y1 - y0)) / denominator
    return float(min(max(vertex, x0), x2))


def _solve(points: list[PowerPoint]) -> tuple[float, float, float] | None:
    """(log a, b, R^2) of log(lr/B) = log a + b log D; None without two distinct D."""
    log_d = np.log([p.tokens for p in points])
    if np.unique(np.round(log_d, 9)).size < 2:
        return None
    y = np.log([p.lr_opt / p.batch_tokens for p in points])
    design = np.column_stack([np.ones_like(log_d), log_d])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ coef
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual**2)) / total if total > 0 else float("nan")
    return float(coef[0]), float(coef[1]), r2


def _free_batch_exponent(points: list[PowerPoint]) -> float | None:
    log_b = np.log([p.batch_tokens for p in points])
    log_d = np.log([p.tokens for p in points])
    if np.unique(np.round(log_b, 9)).size < 2 or np.unique(np.round(log_d, 9)).size < 2:
        return None
    design = np.column_stack([np.ones_like(log_b), log_b, log_d])
    coef, *_ = np.linalg.lstsq(design, np.log([p.lr_opt for p in points]), rcond=None)
    return float(coef[1])


def power_scheduler_missing_reason(sweep: Sweep) -> str:
    kind = (sweep.schedule or {}).get("kind")
    if kind != "wsd":
        return (
            f"no Power scheduler law: it is fitted on WSD sweeps (this sweep's schedule is"
            f" {kind or 'unknown'})"
        )
    return (
        "no Power scheduler law: it needs optima (bracketed in lr, >= 3 learning rates per"
        " batch size) at 2 or more token budgets"
    )


def fit_power_scheduler(sweep: Sweep, *, n_bootstrap: int = 1000, seed: int = 0) -> PowerSchedulerFit | None:
    """The Power scheduler's law on a WSD sweep; None where it cannot be fitted (see
    ``power_scheduler_missing_reason``)."""
    if (sweep.schedule or {}).get("kind") != "wsd":
        return None
    points, edges = batch_optima(sweep)
    solved = _solve(points) if len(points) >= 3 else None
    if solved is None:
        return None
    log_a, b, r2 = solved
    by_cell: dict[str, list[PowerPoint]] = {}
    for point in points:
        by_cell.setdefault(point.cell_id, []).append(point)
    cells = list(by_cell.values())
    rng = np.random.default_rng([seed, 0x9057E5])
    replicates, discarded = [], 0
    for _ in range(n_bootstrap):
        drawn = [point for index in rng.integers(0, len(cells), len(cells)) for point in cells[index]]
        fit = _solve(drawn)
        if fit is None:
            discarded += 1
        else:
            replicates.append(fit[:2])
    return PowerSchedulerFit(
        log_a=log_a,
        b=b,
        bootstrap=np.array(replicates).reshape(-1, 2),
        n_discarded=discarded,
        points=points,
        edge_points=edges,
        free_batch_exponent=_free_batch_exponent(points),
        r2=r2,
    )


__all__ = ["PowerSchedulerFit", "batch_optima", "fit_power_scheduler", "power_scheduler_missing_reason"]
