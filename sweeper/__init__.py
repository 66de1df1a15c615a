"""sweeper: hyperparameter sweeps for LM pre-training.

Public API (imported lazily, so ``from sweeper import load_hparams`` in a trainer pulls in
neither Ray nor torch):

- recipes:   ``Recipe``, ``load_recipe``, ``parse_recipe``, ``RecipeError``
- planning:  ``TrialSpec``, ``plan_trials``, ``plan_cells``
- running:   ``run_sweep`` (the driver), ``SweepSummary``
- errors:    ``SweeperError`` (every refusal a user can cause; ``exit_code``)
- training:  ``run_trial``, ``run_fused`` (torch)
- results:   ``read_trials``, ``read_curves``, ``ResultSink``
- fitting:   ``fit_run``, ``FitReport``
- using:     ``load_hparams``, ``Hparams``, ``Prediction``
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Recipe": "sweeper.recipe",
    "RecipeError": "sweeper.recipe",
    "load_recipe": "sweeper.recipe",
    "parse_recipe": "sweeper.recipe",
    "TrialSpec": "sweeper.plan",
    "plan_trials": "sweeper.plan",
    "plan_cells": "sweeper.plan",
    "TrialOutcome": "sweeper.outcome",
    "run_sweep": "sweeper.sweep",
    "SweepSummary": "sweeper.sweep",
    "SweeperError": "sweeper.errors",
    "run_trial": "sweeper.train",
    "run_fused": "sweeper.train.fused",
    "read_trials": "sweeper.results",
    "read_curves": "sweeper.results",
    "ResultSink": "sweeper.results",
    "fit_run": "sweeper.fit",
    "FitReport": "sweeper.fit",
    "load_hparams": "sweeper.hparams",
    "Hparams": "sweeper.hparams",
    "Prediction": "sweeper.hparams",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sweeper' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
