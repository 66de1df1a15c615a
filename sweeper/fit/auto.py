"""``--estimator auto``: the user's own table chooses the estimator.

Every available estimator is fitted and scored by leave-one-cell-out regret (evaluate.py) on
the table being fitted; the one with the lowest mean held-out regret is used. A difference
below ``TIE`` (0.001%, the precision the summary prints) is a tie, and a tie goes to the
simpler estimator (``SIMPLICITY`` order): a difference the evaluation cannot show is no
reason for more machinery. Means are compared on the cells every candidate could evaluate,
so an estimator is never ranked on an easier subset.

The evaluation needs ``MIN_CELLS`` cells: each fold must keep more cells than the lr law's
three coefficients plus two, else a held-out prediction is an interpolation through almost
every remaining cell and the ranking is noise. Below that the choice is ``FALLBACK``
(``plateau``, Step Law's rule: the fewest assumptions, no surface model that few cells could
mislead), and the output says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from sweeper.fit.data import Sweep

if TYPE_CHECKING:
    from sweeper.fit.report import FitReport

AUTO = "auto"
SIMPLICITY = ("plateau", "compute", "smooth", "surface")  # simplest first
TIE = 1e-5
MIN_CELLS = 6
FALLBACK = "plateau"
RULE = (
    f"lowest mean leave-one-cell-out regret on this table; differences below {TIE:.3%} are"
    f" ties, won by the simpler ({' < '.join(SIMPLICITY)}); with fewer than {MIN_CELLS}"
    f" cells, {FALLBACK}"
)


@dataclass
class Choice:
    """Which estimator ``auto`` used, why, and every candidate's figures."""

    chosen: str
    reason: str
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "requested": AUTO,
            "chosen": self.chosen,
            "rule": RULE,
            "reason": self.reason,
            "figures": self.figures,
        }


def _simplicity(name: str) -> int:
    return SIMPLICITY.index(name) if name in SIMPLICITY else len(SIMPLICITY)


def choose(sweep: Sweep, evaluations: dict[str, Any]) -> Choice:
    """The estimator ``auto`` uses, given every candidate's evaluate.Evaluation."""
    n_cells = len(sweep.cells)
    if n_cells < MIN_CELLS or not evaluations:
        return Choice(
            FALLBACK,
            f"the held-out evaluation cannot rank estimators on {n_cells} cells"
            f" (needs {MIN_CELLS}): using {FALLBACK}, the most robust",
        )
    evaluated = [
        {c["cell_id"] for c in ev.per_cell if c["regret"] is not None} for ev in evaluations.values()
    ]
    common = set.intersection(*evaluated)
    if len(common) < MIN_CELLS:
        return Choice(
            FALLBACK,
            f"only {len(common)} cells could be evaluated by every estimator"
            f" (needs {MIN_CELLS}): using {FALLBACK}, the most robust",
        )
    figures = {}
    for name, ev in evaluations.items():
        regrets = np.array([c["regret"] for c in ev.per_cell if c["cell_id"] in common])
        figures[name] = {
            "mean_regret": float(regrets.mean()),
            "worst_regret": float(regrets.max()),
            "cells": len(regrets),
        }
    best = min(figures.values(), key=lambda f: f["mean_regret"])["mean_regret"]
    tied = [name for name, f in figures.items() if f["mean_regret"] - best < TIE]
    chosen = min(tied, key=_simplicity)
    reason = f"lowest mean held-out regret ({figures[chosen]['mean_regret']:.3%} on {len(common)} cells)"
    if len(tied) > 1:
        reason += f"; tied within {TIE:.3%} with {', '.join(sorted(set(tied) - {chosen}))}: the simpler wins"
    return Choice(chosen, reason, figures)


def build_auto_report(
    sweep: Sweep, *, n_bootstrap: int, seed: int, evaluate: bool = False, loss_law: bool = True
) -> FitReport:
    """A FitReport whose laws come from the estimator ``choose`` picks (every estimator's
    evaluation is in it, as with --evaluate)."""
    from sweeper.fit.pipeline import build_report

    enough = len(sweep.cells) >= MIN_CELLS
    report = build_report(
        sweep,
        estimator=FALLBACK,
        n_bootstrap=n_bootstrap,
        evaluate=enough or evaluate,
        seed=seed,
        loss_law=loss_law,
    )
    choice = choose(sweep, report.evaluations or {})
    report.selected = report.fits[choice.chosen]
    report.choice = choice
    return report


__all__ = [
    "AUTO",
    "Choice",
    "FALLBACK",
    "MIN_CELLS",
    "RULE",
    "SIMPLICITY",
    "TIE",
    "build_auto_report",
    "choose",
]
