"""Estimators by name, and the default one.

The default, ``auto``, is not an estimator but a rule (sweeper/fit/auto.py, docs/fitting.md):
every estimator is scored leave-one-cell-out on the table being fitted and the best is used.
"""

from __future__ import annotations

from sweeper.fit.estimators import Compute, Estimator, Plateau
from sweeper.fit.smooth import Smooth
from sweeper.fit.surface import Surface

ESTIMATORS: dict[str, type[Estimator]] = {
    "plateau": Plateau,
    "smooth": Smooth,
    "compute": Compute,
    "surface": Surface,
}
DEFAULT_ESTIMATOR = "auto"  # sweeper.fit.auto: the table's own held-out evaluation chooses


def make_estimator(name: str) -> Estimator:
    try:
        return ESTIMATORS[name]()
    except KeyError:
        raise KeyError(f"unknown estimator '{name}' (choose from {', '.join(ESTIMATORS)})") from None
