"""FitReport: everything one fit produced, as text (``summary``) and as fit.json (``document``).

The report is data: fit/pipeline.py builds and writes it (fit.json, plots/), and plots.py
draws from it; nothing here imports either."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sweeper.fit.data import Sweep
from sweeper.fit.estimators import EstimatorFit
from sweeper.fit.evaluate import Evaluation
from sweeper.fit.fitjson import FIT_KIND, FIT_SCHEMA_VERSION, law_to_dict
from sweeper.fit.laws import PowerLawFit
from sweeper.fit.losslaw import LossLawFit
from sweeper.fit.power import PowerSchedulerFit
from sweeper.fit.summary import evaluation_lines, format_law, format_noise

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
    evaluations: dict[str, Evaluation] | None = None
    skipped_estimators: dict[str, str] = field(default_factory=dict)
    loss_law: LossLawFit | None = None
    loss_law_note: str = ""  # why there is no loss law, when there is none
    power_law: PowerSchedulerFit | None = None  # the Power scheduler's law (WSD sweeps)
    power_law_note: str = ""  # why there is none, when there is none
    problems: list[str] = field(default_factory=list)
    fit_json: Path | None = None
    plots: list[Path] = field(default_factory=list)
    choice: Any = None  # auto.Choice when --estimator auto chose the estimator

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
    def flops_model(self) -> dict[str, Any] | None:
        """log M = k0 + k1 log N over the cells (M known), so a compute-law prediction can
        estimate M from N when the user gives none."""
        known = [(c.n_params, m) for c in self.sweep.cells if (m := c.flops_per_token)]
        if not known:
            return None
        log_n = np.log([n for n, _ in known])
        log_m = np.log([m for _, m in known])
        if np.ptp(log_n) > 0:
            k1, k0 = np.polyfit(log_n, log_m, 1)
        else:
            k1, k0 = 1.0, float(np.mean(log_m - log_n))
        return {
            "log_k": float(k0),
            "exponent": float(k1),
            "formula": "flops_per_token ~= exp(log_k) * N^exponent (fitted on the cells)",
        }

    def cells_document(self) -> list[dict[str, Any]]:
        rows = []
        for cell, optimum in zip(self.sweep.cells, self.selected.cell_optima):
            best = cell.best_index
            rows.append(
                {
                    "cell_id": cell.cell_id,
                    "n_params": cell.n_params,
                    "tokens": cell.tokens,
                    "seq_len": cell.seq_len,
                    "flops_per_token": cell.flops_per_token,
                    "runs": int(cell.loss.size),
                    "best_loss": cell.best_loss,
                    "best_lr": float(cell.lr[best]),
                    "best_batch_size_tokens": float(cell.batch_tokens[best]),
                    "optimum_lr": optimum["lr"],
                    "optimum_batch_size_tokens": optimum["batch_size_tokens"],
                    "near_optimal_runs": optimum["near_optimal_runs"],
                    "diverged_excluded": cell.excluded_diverged,
                    "noise": cell.noise.to_dict() if cell.noise is not None else None,
                    "flags": list(cell.flags) + ([optimum["note"]] if optimum.get("note") else []),
                }
            )
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
            "estimator_choice": (
                self.choice.to_dict()
                if self.choice is not None
                else {"requested": self.estimator, "chosen": self.estimator}
            ),
            "bootstrap": {
                "n_requested": self.n_bootstrap,
                "scheme": BOOTSTRAP_SCHEME,
                "seed": self.seed,
                "interval": "percentile, 95%",
            },
            "lr_law": law_to_dict(self.lr_law, with_samples=True),
            "batch_law": law_to_dict(self.batch_law, with_samples=True),
            "loss_law": self.loss_law.to_dict() if self.loss_law is not None else None,
            "power_scheduler": self.power_law.to_dict() if self.power_law is not None else None,
            "flops_model": self.flops_model(),
            "data_range": sweep.data_range(),
            "schedule": sweep.schedule,
            "counts": counts,
            "cells": self.cells_document(),
            "excluded_cells": sweep.excluded_cells,
            "warnings": sweep.warnings + self.problems,
            "estimators": estimators,
            "evaluation": (
                {name: ev.to_dict() for name, ev in self.evaluations.items()} if self.evaluations else None
            ),
        }

    # ----------------------------------------------------------------- text
    def summary(self) -> str:
        """The text ``sweeper fit`` prints: laws with 95% intervals, R^2, near-optimal counts,
        flags, and (with --evaluate) the held-out regret of every estimator."""
        sweep = self.sweep
        counts = ", ".join(f"{k} {v}" for k, v in sorted(sweep.status_counts.items()))
        lines = [
            f"sweep '{sweep.name}': {sum(sweep.status_counts.values())} trials ({counts})",
            f"fitted {sweep.n_runs} grid points in {len(sweep.cells)} cells;"
            f" {sweep.n_diverged} runs excluded as diverged (loss far above the cell's best)"
            + (f"; {sweep.snapped_values} grid values re-rounded" if sweep.snapped_values else ""),
            f"estimator: {self.estimator} -- {self.selected.estimator.source}",
        ]
        if self.choice is not None:
            lines.append(f"  chosen by --estimator auto: {self.choice.reason}")
        lines.append("")
        lines += format_law("learning rate", self.lr_law)
        lines += format_law("batch size (tokens)", self.batch_law)
        if self.n_bootstrap:
            lines.append(f"  bootstrap: {self.n_bootstrap} resamples of cells and of runs within cells")
        total_runs = sweep.n_runs
        lines += [
            "",
            f"near-optimal runs (within 0.25% of the cell's best loss):"
            f" {self.near_optimal_runs} of {total_runs}",
        ]
        for cell, optimum in zip(sweep.cells, self.selected.cell_optima):
            best = cell.best_index
            lines.append(
                f"  {cell.cell_id:<24} {cell.label:<22} {optimum['near_optimal_runs']:>3} of"
                f" {cell.loss.size:<3} best {cell.best_loss:.4f} at lr {cell.lr[best]:.3g},"
                f" B {cell.batch_tokens[best]:.4g} tok; optimum lr {optimum['lr']:.3g},"
                f" B {optimum['batch_size_tokens']:.4g}"
            )
        lines += format_noise(sweep)
        if self.loss_law is not None:
            lines += [""] + self.loss_law.summary_lines()
        elif self.loss_law_note:
            lines += ["", self.loss_law_note]
        if self.power_law is not None:
            lines += [""] + self.power_law.summary_lines()
        elif (sweep.schedule or {}).get("kind") == "wsd" and self.power_law_note:
            lines += ["", self.power_law_note]
        if self.evaluations:
            lines += [
                "",
                "held-out evaluation (leave one cell out; regret = loss at the predicted"
                " point / cell's best - 1):",
            ]
            lines += evaluation_lines(self.evaluations, self.estimator, chosen=self.choice is not None)
            for name, fit in self.fits.items():
                if name == self.estimator:
                    continue
                lines += [f"  [{name}] {fit.estimator.source}"]
                lines += [
                    "  " + line for line in format_law("lr", fit.lr_law) + format_law("B", fit.batch_law)
                ]
            for name, reason in self.skipped_estimators.items():
                lines.append(f"  {name}: skipped ({reason})")
        loud = [f"  !! {c.cell_id} ({c.label}): {flag}" for c in sweep.cells for flag in c.flags]
        loud += [
            f"  !! {o_cell.cell_id}: {o['note']}"
            for o_cell, o in zip(sweep.cells, self.selected.cell_optima)
            if o.get("note")
        ]
        loud += [
            f"  !! cell {e['cell_id']} ({e['runs']} runs) excluded: {e['reason']}"
            for e in sweep.excluded_cells
        ]
        loud += [f"  !! {w}" for w in sweep.warnings + self.problems]
        if loud:
            lines += ["", "WARNINGS:"] + loud
        if self.fit_json:
            lines += ["", f"wrote {self.fit_json}" + (f" and {len(self.plots)} plots" if self.plots else "")]
        return "\n".join(lines)
