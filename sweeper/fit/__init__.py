"""The fitter: run folder (Parquet trials) -> cell optima -> power laws with bootstrap
intervals -> fit.json and plots. Imports numpy, scipy, pyarrow (and matplotlib when
plotting); never ray or torch.

Public API::

    fit_run(run_dir, estimator=DEFAULT_ESTIMATOR, n_bootstrap=1000, evaluate=False,
            plots=True, seed=0) -> FitReport
    FitReport.summary() -> str;  FitReport.document() -> dict (what fit.json holds)
    load_sweep(run_dir) -> (Sweep, problems);  fit_sweep(sweep, estimator) -> EstimatorFit
    ESTIMATORS (name -> class), FitError (bad input; CLI exit code 2)
"""

from sweeper.fit.data import Cell, FitError, Sweep
from sweeper.fit.estimators import Estimator, EstimatorFit
from sweeper.fit.fitjson import FIT_SCHEMA_VERSION
from sweeper.fit.pipeline import build_report, fit_run, fit_sweep, load_sweep
from sweeper.fit.registry import DEFAULT_ESTIMATOR, ESTIMATORS, make_estimator
from sweeper.fit.report import FitReport
from sweeper.fit.select import CleaningOptions, clean_trials

__all__ = [
    "DEFAULT_ESTIMATOR",
    "ESTIMATORS",
    "FIT_SCHEMA_VERSION",
    "Cell",
    "CleaningOptions",
    "Estimator",
    "EstimatorFit",
    "FitError",
    "FitReport",
    "Sweep",
    "build_report",
    "clean_trials",
    "fit_run",
    "fit_sweep",
    "load_sweep",
    "make_estimator",
]
