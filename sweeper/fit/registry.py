"""Estimators by name, and the default one.

The default is chosen by the held-out evaluation (``sweeper fit --evaluate``) on Step Law's
released MoE sweep (708 runs, 16 cells): see docs/figures.md ("Accuracy").
"""

from __future__ import annotations

from sweeper.fit.estimators import Compute, Estimator, Plateau
from sweeper.fit.smooth import Smooth

ESTIMATORS: dict[str, type[Estimator]] = {"plateau": Plateau, "smooth": Smooth, "compute": Compute}
DEFAULT_ESTIMATOR = "smooth"


def make_estimator(name: str) -> Estimator:
    try:
        return ESTIMATORS[name]()
    except KeyError:
        raise KeyError(f"unknown estimator '{name}' (choose from {', '.join(ESTIMATORS)})") from None
