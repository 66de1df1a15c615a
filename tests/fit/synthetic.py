"""Synthetic sweeps with known laws, written through the real ResultSink.

Landscape per cell: log L = log L0(N, D) + k_lr(x) (x - x*)^2 + k_b (y - y*)^2 + k_xy (x-x*)(y-y*)
with x = log lr, y = log B_tokens, x* = log(a N^alpha D^beta), y* = log(c N^delta D^gamma), and
k_lr larger above the optimum than below it when ``asymmetry`` > 1 (real landscapes rise
faster towards divergence). Each cell gets its own lr x B grid, offset at random from the
true optimum (planners centre grids on a guess, not on the truth), plus multiplicative noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sweeper.results.schema import TRIALS_SCHEMA
from sweeper.results.sink import ResultSink


@dataclass(frozen=True)
class Truth:
    a: float = 0.5
    alpha: float = -0.45
    beta: float = 0.12
    c: float = 3.0
    gamma: float = 0.45
    delta: float = 0.0  # batch exponent of N (Step Law's batch law has none)


def synthetic_rows(
    truth: Truth = Truth(),
    *,
    sizes=(1e6, 3e6, 1e7, 3e7, 1e8),
    budgets=(3e8, 1e9, 3e9, 1e10),
    n_lr: int = 13,
    n_b: int = 9,
    lr_step: float = 2**0.25,
    b_step: float = 2 ** (1 / 3),
    k_lr: float = 0.02,
    k_b: float = 0.01,
    k_xy: float = 0.0,
    asymmetry: float = 1.0,
    noise: float = 2e-4,
    seq_len: int = 256,
    seed: int = 0,
    offset: float = 0.5,
    lr_shift: float = 0.0,
) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        for d in budgets:
            x_star = math.log(truth.a * n**truth.alpha * d**truth.beta)
            y_star = math.log(truth.c * n**truth.delta * d**truth.gamma)
            # Grid centre: the truth moved by up to +-offset grid steps (in log space), plus
            # lr_shift steps (a grid that does not bracket the optimum).
            cx = x_star + (rng.uniform(-offset, offset) + lr_shift) * math.log(lr_step)
            cy = y_star + rng.uniform(-offset, offset) * math.log(b_step)
            xs = cx + (np.arange(n_lr) - (n_lr - 1) / 2) * math.log(lr_step)
            ys = cy + (np.arange(n_b) - (n_b - 1) / 2) * math.log(b_step)
            base = 2.0 + 40.0 * n**-0.3 + 30.0 * d**-0.25
            for x in xs:
                for y in ys:
                    dx, dy = x - x_star, y - y_star
                    k = k_lr * (asymmetry if dx > 0 else 1.0)
                    log_loss = math.log(base) + k * dx * dx + k_b * dy * dy + k_xy * dx * dy
                    loss = math.exp(log_loss) * (1.0 + noise * rng.standard_normal())
                    batch_seq = max(1, round(math.exp(y) / seq_len))
                    rows.append(_row(n, d, seq_len, math.exp(x), batch_seq, loss, len(rows)))
    return rows


def _row(
    n: float,
    d: float,
    seq_len: int,
    lr: float,
    batch_seq: int,
    loss: float,
    index: int,
    status: str = "complete",
) -> dict:
    row = {name: None for name in TRIALS_SCHEMA.names}
    row.update(
        trial_id=f"t{index:06d}",
        sweep="synthetic",
        cell_id=f"N{n:.3g}-D{d:.3g}",
        seq_len=seq_len,
        n_params=int(n),
        flops_per_token=6.0 * n + 12 * 4 * 128 * seq_len,
        tokens_budget=int(d),
        lr=lr,
        batch_size=batch_seq,
        batch_size_tokens=batch_seq * seq_len,
        schedule="cosine",
        status=status,
        loss=loss,
        attempt=1,
    )
    return row


def write_run(run_dir: Path, rows: list[dict]) -> Path:
    ResultSink(Path(run_dir)).record_rows(rows, "synthetic")
    return Path(run_dir)
