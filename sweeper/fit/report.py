"""FitReport: everything one fit produced, as text (``summary``) and as fit.json (``document``)."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sweeper.fit.data import FitError, Sweep
from sweeper.fit.fitjson import FIT_KIND, FIT_SCHEMA_VERSION, law_to_dict, write_json_atomic
from sweeper.fit.laws import PowerLawFit
from sweeper.fit.estimators import EstimatorFit
from sweeper.fit.pipeline import fit_sweep
from sweeper.fit.registry import ESTIMATORS, make_estimator

BOOTSTRAP_SCHEME = (
    "two-stage: cells drawn with replacement, then each drawn cell's runs resampled"
    " (plateau/compute: its near-optimal runs; smooth: the runs its quadratic is fitted to)"
)


@dataclass
class FitReport:
    sweep: Sweep
    selected: EstimatorFit
    fits: dict[str, EstimatorFit]
    n_bootstrap: int
    seed: int
    evaluations: dict[str, Any] | None = None  # name -> evaluate.Evaluation
    skipped_estimators: dict[str, str] = field(default_factory=dict)
    loss_law: Any = None  # losslaw.LossLawFit | None
    loss_law_note: str = ""  # why there is no loss law, when there is none
    problems: list[str] = field(default_factory=list)
    fit_json: Path | None = None
    plots: list[Path] = field(default_factory=list)

    @property
    def estimator(self) -> str:
        return self.selected.name

    @property
    def lr_law(self) -> PowerLawFit:
        return self.selected.lr_law

    @property
    def batch_law(self) -> PowerLawFit:
        return self.selected.batch_law

    @property
    def near_optimal_runs(self) -> int:
        return int(sum(o["near_optimal_runs"] for o in self.selected.cell_optima))

    # ----------------------------------------------------------------- fit.json
    def flops_model(self) -> dict[str, float] | None:
        """log M = k0 + k1 log N over the cells (M known), so a compute-law prediction can
        estimate M from N when the user gives none."""
        cells = [c for c in self.sweep.cells if c.flops_per_token]
        if not cells:
            return None
        log_n = np.log([c.n_params for c in cells])
        log_m = np.log([c.flops_per_token for c in cells])
        if np.ptp(log_n) > 0:
            k1, k0 = np.polyfit(log_n, log_m, 1)
        else:
            k1, k0 = 1.0, float(np.mean(log_m - log_n))
        return {"log_k": float(k0), "exponent": float(k1),
                "formula": "flops_per_token ~= exp(log_k) * N^exponent (fitted on the cells)"}

    def cells_document(self) -> list[dict[str, Any]]:
        rows = []
        for cell, optimum in zip(self.sweep.cells, self.selected.cell_optima):
            best = cell.best_index
            rows.append({
                "cell_id": cell.cell_id, "n_params": cell.n_params, "tokens": cell.tokens,
                "seq_len": cell.seq_len, "flops_per_token": cell.flops_per_token,
                "runs": int(cell.loss.size), "best_loss": cell.best_loss,
                "best_lr": float(cell.lr[best]), "best_batch_size_tokens": float(cell.batch_tokens[best]),
                "optimum_lr": optimum["lr"], "optimum_batch_size_tokens": optimum["batch_size_tokens"],
                "near_optimal_runs": optimum["near_optimal_runs"],
                "diverged_excluded": cell.excluded_diverged,
                "noise": cell.noise.to_dict() if cell.noise is not None else None,
                "flags": list(cell.flags) + ([optimum["note"]] if optimum.get("note") else []),
            })
        return rows

    def document(self) -> dict[str, Any]:
        sweep = self.sweep
        counts = {
            "trials": int(sum(sweep.status_counts.values())),
            "by_status": dict(sorted(sweep.status_counts.items())),
            "fitted_runs": sweep.n_runs,
            "diverged_excluded": sweep.n_diverged,
            "near_optimal_runs": self.near_optimal_runs,
            "cells_fitted": len(sweep.cells),
            "cells_excluded": len(sweep.excluded_cells),
            "snapped_grid_values": sweep.snapped_values,
        }
        estimators = {}
        for name, fit in self.fits.items():
            entry: dict[str, Any] = {
                "source": fit.estimator.source,
                "lr_law": law_to_dict(fit.lr_law, with_samples=False),
                "batch_law": law_to_dict(fit.batch_law, with_samples=False),
            }
            if self.evaluations and name in self.evaluations:
                entry["evaluation"] = self.evaluations[name].to_dict()
            estimators[name] = entry
        for name, reason in self.skipped_estimators.items():
            estimators[name] = {"skipped": reason}
        return {
            "schema_version": FIT_SCHEMA_VERSION,
            "kind": FIT_KIND,
            "sweep": sweep.name,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "estimator": self.estimator,
            "estimator_source": self.selected.estimator.source,
            "bootstrap": {"n_requested": self.n_bootstrap, "scheme": BOOTSTRAP_SCHEME,
                          "seed": self.seed, "interval": "percentile, 95%"},
            "lr_law": law_to_dict(self.lr_law, with_samples=True),
            "batch_law": law_to_dict(self.batch_law, with_samples=True),
            "loss_law": self.loss_law.to_dict() if self.loss_law is not None else None,
            "flops_model": self.flops_model(),
            "data_range": sweep.data_range(),
            "schedule": sweep.schedule,
            "counts": counts,
            "cells": self.cells_document(),
            "excluded_cells": sweep.excluded_cells,
            "warnings": sweep.warnings + self.problems,
            "estimators": estimators,
            "evaluation": (
                {name: ev.to_dict() for name, ev in self.evaluations.items()}
                if self.evaluations else None
            ),
        }

    def write(self, run_dir: Path, *, plots: bool = True) -> Path:
        run_dir = Path(run_dir)
        if plots:
            from sweeper.fit.plots import write_plots

            self.plots = write_plots(self, run_dir / "plots")
        self.fit_json = write_json_atomic(run_dir / "fit.json", self.document())
        return self.fit_json

    # ----------------------------------------------------------------- text
    def summary(self) -> str:
        from sweeper.fit.summary import format_summary

        return format_summary(self)


def build_report(sweep: Sweep, *, estimator: str, n_bootstrap: int, evaluate: bool, seed: int,
                 loss_law: bool = True) -> FitReport:
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
    return FitReport(sweep=sweep, selected=selected, fits=fits, n_bootstrap=n_bootstrap,
                     seed=seed, evaluations=evaluations, skipped_estimators=skipped,
                     loss_law=loss_fit, loss_law_note=loss_note)

