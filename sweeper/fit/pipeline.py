"""The fit, end to end: run folder -> cleaned cells -> estimator(s) -> laws -> fit.json + plots.

`fit_run` is what ``sweeper fit`` calls. It validates everything before writing anything, so
a failed fit (FitError) leaves no partial fit.json behind.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from sweeper.fit.data import FitError, Sweep
from sweeper.fit.estimators import Estimator, EstimatorFit, cell_features
from sweeper.fit.fitjson import write_fit_json
from sweeper.fit.laws import bootstrap_cell_counts
from sweeper.fit.power import fit_power_scheduler, power_scheduler_missing_reason
from sweeper.fit.registry import DEFAULT_ESTIMATOR, ESTIMATORS, make_estimator
from sweeper.fit.report import FitReport
from sweeper.fit.select import CleaningOptions, clean_trials


def check_fittable(sweep: Sweep, estimator: Estimator) -> None:
    """Raise FitError when the cells cannot determine the estimator's laws."""
    reason = estimator.available(sweep)
    if reason:
        raise FitError(f"estimator '{estimator.name}' cannot fit this sweep: {reason}")
    features = cell_features(sweep)
    n_cells = len(sweep.cells)
    for law, variables in (("lr", estimator.lr_variables), ("batch size", estimator.batch_variables)):
        needed = len(variables) + 1
        if n_cells < needed + 1:
            raise FitError(
                f"{n_cells} fittable cells are too few for the {law} law"
                f" ({needed} coefficients need at least {needed + 1} cells)"
            )
        for variable in variables:
            distinct = np.unique(np.round(features[variable], 9)).size
            if distinct < 2:
                label = {"N": "model sizes", "D": "token budgets", "C": "compute budgets"}[variable]
                raise FitError(
                    f"the {law} law needs at least 2 distinct {label} among the fitted cells"
                    f" (found {distinct})"
                )


def fit_sweep(
    sweep: Sweep, estimator: Estimator | str, *, n_bootstrap: int = 1000, seed: int = 0
) -> EstimatorFit:
    """Fit one estimator's two laws on a cleaned sweep (bootstrap: cells and runs)."""
    if isinstance(estimator, str):
        estimator = make_estimator(estimator)
    check_fittable(sweep, estimator)
    # One random stream per estimator, so adding an estimator never changes another's numbers.
    rng = np.random.default_rng([seed, zlib.crc32(estimator.name.encode())])
    counts = bootstrap_cell_counts(rng, len(sweep.cells), n_bootstrap) if n_bootstrap else None
    return estimator.fit(sweep, rng, n_bootstrap, counts)


def load_sweep(run_dir: str | Path, options: CleaningOptions = CleaningOptions()) -> tuple[Sweep, list[str]]:
    """Read and clean a run folder's trials. Returns the sweep and the reader's problems."""
    from sweeper.results.reader import read_trials

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FitError(f"run folder not found: {run_dir}")
    result = read_trials(run_dir)
    if result.table.num_rows == 0:
        extra = f" ({result.problems[0]})" if result.problems else ""
        raise FitError(f"no trials in {run_dir / 'trials'}{extra}")
    return clean_trials(result.table, options), list(result.problems)


def fit_run(
    run_dir: str | Path,
    *,
    estimator: str = DEFAULT_ESTIMATOR,
    n_bootstrap: int = 1000,
    evaluate: bool = False,
    plots: bool = True,
    seed: int = 0,
    options: CleaningOptions = CleaningOptions(),
    loss_law: bool = True,
) -> FitReport:
    """Fit a run folder and write ``fit.json`` (and PNG plots under ``plots/``).

    ``estimator`` picks the laws that predictions use. With ``evaluate`` every available
    estimator is fitted and scored by leave-one-cell-out regret (see evaluate.py).
    Raises FitError on bad input, before anything is written."""
    from sweeper.fit.auto import AUTO, build_auto_report

    if estimator not in ESTIMATORS and estimator != AUTO:
        raise FitError(f"unknown estimator '{estimator}' (choose from {AUTO}, {', '.join(ESTIMATORS)})")
    if n_bootstrap < 0:
        raise FitError("--bootstrap must be >= 0")
    run_dir = Path(run_dir)
    sweep, problems = load_sweep(run_dir, options)
    if estimator == AUTO:
        report = build_auto_report(
            sweep, n_bootstrap=n_bootstrap, seed=seed, evaluate=evaluate, loss_law=loss_law
        )
    else:
        report = build_report(
            sweep,
            estimator=estimator,
            n_bootstrap=n_bootstrap,
            evaluate=evaluate,
            seed=seed,
            loss_law=loss_law,
        )
    report.problems = problems
    if plots:
        from sweeper.fit.plots import write_plots  # matplotlib only when plotting

        report.plots = write_plots(report, run_dir / "plots")
    report.fit_json = write_fit_json(run_dir / "fit.json", report.document())
    return report


def build_report(
    sweep: Sweep, *, estimator: str, n_bootstrap: int, evaluate: bool, seed: int, loss_law: bool = True
) -> FitReport:
    """Fit the selected estimator (and, with ``evaluate``, every available one)."""
    selected = fit_sweep(sweep, estimator, n_bootstrap=n_bootstrap, seed=seed)
    fits = {estimator: selected}
    skipped: dict[str, str] = {}
    evaluations = None
    if evaluate:
        from sweeper.fit.evaluate import evaluate_estimator

        evaluations = {}
        for name in ESTIMATORS:
            candidate = make_estimator(name)
            if name not in fits:
                reason = candidate.available(sweep)
                if reason:
                    skipped[name] = reason
                    continue
                try:
                    fits[name] = fit_sweep(sweep, candidate, n_bootstrap=n_bootstrap, seed=seed)
                except FitError as error:  # another estimator's failure is not this fit's
                    skipped[name] = str(error)
                    continue
            evaluations[name] = evaluate_estimator(sweep, fits[name])
    loss_fit, loss_note = None, ""
    if loss_law:
        from sweeper.fit.losslaw import fit_loss_law, loss_law_missing_reason

        loss_fit = fit_loss_law(sweep, n_bootstrap=n_bootstrap, seed=seed)
        if loss_fit is None:
            loss_note = loss_law_missing_reason(sweep)
    power_fit = fit_power_scheduler(sweep, n_bootstrap=n_bootstrap, seed=seed)
    return FitReport(
        sweep=sweep,
        selected=selected,
        fits=fits,
        n_bootstrap=n_bootstrap,
        seed=seed,
        evaluations=evaluations,
        skipped_estimators=skipped,
        loss_law=loss_fit,
        loss_law_note=loss_note,
        power_law=power_fit,
        power_law_note="" if power_fit is not None else power_scheduler_missing_reason(sweep),
    )
