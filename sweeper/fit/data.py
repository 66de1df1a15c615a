"""Typed containers the fitter works on: one cleaned sweep = cells of runs in numpy arrays.

Everything downstream of cleaning (estimators, laws, evaluation, plots) reads these and
nothing else, so the Parquet layout is known to exactly one function (`select.clean_trials`).

Units: ``n_params`` = N (non-embedding, or active for MoE), ``tokens`` = D (the cell's token
budget), ``flops_per_token`` = M (DeepSeek's non-embedding FLOPs/token, None if unknown),
``batch_tokens`` = B in tokens. ``log_*`` are natural logs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sweeper.errors import SweeperError
from sweeper.fit.noise import NoiseFloor


class FitError(SweeperError):
    """Bad input for a fit (no run folder, no complete trials, too few cells). The CLI turns
    it into one line on stderr and exit code 2; nothing is written when it is raised."""


@dataclass
class Cell:
    """One (N, D, seq_len) cell after cleaning. Arrays hold one entry per grid point
    (replicates of the same (lr, B) are averaged; ``replicates`` counts them)."""

    cell_id: str
    n_params: float
    tokens: float
    seq_len: int
    flops_per_token: float | None
    lr: np.ndarray
    batch_tokens: np.ndarray
    loss: np.ndarray
    replicates: np.ndarray
    excluded_diverged: int = 0
    flags: list[str] = field(default_factory=list)
    noise: NoiseFloor | None = None  # seed-to-seed spread near the optimum (fit/noise.py)
    # (log lr, log B) of the optimum as cleaning located it (fit/quadratic.py); None where no
    # convex quadratic fits and the best run stands for it
    located: tuple[float, float] | None = None

    @property
    def log_lr(self) -> np.ndarray:
        return np.log(self.lr)

    @property
    def log_batch(self) -> np.ndarray:
        return np.log(self.batch_tokens)

    @property
    def best_index(self) -> int:
        return int(np.argmin(self.loss))

    @property
    def best_loss(self) -> float:
        return float(self.loss[self.best_index])

    @property
    def compute(self) -> float | None:
        """C = M * D (DeepSeek LLM), None when M is unknown."""
        return None if self.flops_per_token is None else self.flops_per_token * self.tokens

    @property
    def label(self) -> str:
        return f"N={self.n_params:.3g} D={self.tokens:.3g}"

    def edge(self) -> list[str]:
        """Which grid ends the optimum sits at ('lr low', 'lr high', 'B low', 'B high'):
        those it lies within half a grid step of (or beyond), so that the grid value nearest
        to it is the last one. The optimum is ``located`` where cleaning found one, else the
        best run (which is then the grid value itself)."""
        best = self.best_index
        where = self.located or (float(self.log_lr[best]), float(self.log_batch[best]))
        sides = []
        for name, values, at in (("lr", self.log_lr, where[0]), ("B", self.log_batch, where[1])):
            distinct = np.unique(values)
            if distinct.size < 2:
                continue
            if at - distinct[0] < 0.5 * (distinct[1] - distinct[0]):
                sides.append(f"{name} low")
            if distinct[-1] - at < 0.5 * (distinct[-1] - distinct[-2]):
                sides.append(f"{name} high")
        return sides

    def edge_lead(self, side: str) -> float:
        """How far (nats) the best run one grid value in from ``side`` ('B low', ...) is
        behind the best run at that end (negative: ahead of it): a large lead says the
        optimum lies beyond the edge; a lead inside the noise floor says the flat part of
        the landscape reaches the edge."""
        name, end = side.split()
        values = self.lr if name == "lr" else self.batch_tokens
        distinct = np.unique(values)
        outer, inner = (distinct[0], distinct[1]) if end == "low" else (distinct[-1], distinct[-2])
        return float(self.loss[values == inner].min() - self.loss[values == outer].min())


@dataclass
class Sweep:
    """A cleaned sweep: the cells that can be fitted, plus what was dropped and why."""

    name: str
    cells: list[Cell]
    status_counts: dict[str, int]
    excluded_cells: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    snapped_values: int = 0  # grid values rewritten to their canonical rounding
    schedule: dict | None = None  # the runs' common lr schedule (kind, fractions), if one
    cache: dict = field(default_factory=dict, repr=False, compare=False)  # derived, per sweep

    @property
    def n_runs(self) -> int:
        return int(sum(cell.loss.size for cell in self.cells))

    @property
    def n_diverged(self) -> int:
        return int(sum(cell.excluded_diverged for cell in self.cells))

    def arrays(self) -> dict[str, np.ndarray]:
        """Per-cell scalars as arrays, in cell order (for the law fits)."""
        return {
            "log_n": np.log([c.n_params for c in self.cells]),
            "log_d": np.log([c.tokens for c in self.cells]),
            "log_c": np.log([c.compute if c.compute else np.nan for c in self.cells]),
        }

    def data_range(self) -> dict[str, float | int | None]:
        """The (N, D, seq_len, C) box the laws were fitted on: predictions outside it
        are extrapolations and say by how much."""
        ns = [c.n_params for c in self.cells]
        ds = [c.tokens for c in self.cells]
        ss = [c.seq_len for c in self.cells]
        cs = [c.compute for c in self.cells if c.compute]
        return {
            "n_params_min": float(min(ns)),
            "n_params_max": float(max(ns)),
            "tokens_min": float(min(ds)),
            "tokens_max": float(max(ds)),
            "seq_len_min": int(min(ss)),
            "seq_len_max": int(max(ss)),
            "compute_min": float(min(cs)) if cs else None,
            "compute_max": float(max(cs)) if cs else None,
        }
