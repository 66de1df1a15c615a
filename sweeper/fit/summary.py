"""The text ``sweeper fit`` prints: laws with 95% intervals, R^2, near-optimal counts, flags,
and (with --evaluate) the held-out regret of every estimator."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from sweeper.fit.fitjson import law_to_dict
from sweeper.fit.laws import PowerLawFit
from sweeper.fit.noise import band_inside_noise
from sweeper.fit.select import NEAR_OPTIMAL_BAND

if TYPE_CHECKING:
    from sweeper.fit.report import FitReport


def _num(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "nan"
    return f"{value:.4g}" if 1e-3 <= abs(value) < 1e4 else f"{value:.3e}"


def format_law(title: str, law: PowerLawFit) -> list[str]:
    entry = law_to_dict(law, with_samples=False)
    lines = [f"{title}: {entry['formula']}"]
    for name, value in entry["coefficients"].items():
        lo, hi = entry["intervals"][name]
        lines.append(f"  {name:<6} = {_num(value):>10}   95% interval [{_num(lo)}, {_num(hi)}]")
    lines.append(
        f"  R^2 = {law.r2:.3f} on {law.n_observations} points from {law.n_cells} cells;"
        f" {len(law.bootstrap)} bootstrap fits"
        + (f" ({law.n_degenerate} degenerate resamples discarded)" if law.n_degenerate else "")
    )
    return lines


def format_summary(report: "FitReport") -> str:
    sweep = report.sweep
    counts = ", ".join(f"{k} {v}" for k, v in sorted(sweep.status_counts.items()))
    lines = [
        f"sweep '{sweep.name}': {sum(sweep.status_counts.values())} trials ({counts})",
        f"fitted {sweep.n_runs} grid points in {len(sweep.cells)} cells;"
        f" {sweep.n_diverged} runs excluded as diverged (loss far above the cell's best)"
        + (f"; {sweep.snapped_values} grid values re-rounded" if sweep.snapped_values else ""),
        f"estimator: {report.estimator} -- {report.selected.estimator.source}",
        "",
    ]
    lines += format_law("learning rate", report.lr_law)
    lines += format_law("batch size (tokens)", report.batch_law)
    if report.n_bootstrap:
        lines.append(f"  bootstrap: {report.n_bootstrap} resamples of cells and of runs within cells")
    total_runs = sweep.n_runs
    lines += ["", f"near-optimal runs (within 0.25% of the cell's best loss):"
              f" {report.near_optimal_runs} of {total_runs}"]
    for cell, optimum in zip(sweep.cells, report.selected.cell_optima):
        best = cell.best_index
        lines.append(
            f"  {cell.cell_id:<24} {cell.label:<22} {optimum['near_optimal_runs']:>3} of"
            f" {cell.loss.size:<3} best {cell.best_loss:.4f} at lr {cell.lr[best]:.3g},"
            f" B {cell.batch_tokens[best]:.4g} tok; optimum lr {optimum['lr']:.3g},"
            f" B {optimum['batch_size_tokens']:.4g}"
        )
    noisy = [cell for cell in sweep.cells if cell.noise is not None]
    if noisy:
        lines += ["", "noise floor (seed-to-seed sd of one run's loss, pooled over replicated points"
                  f" near each optimum) against the near-optimal band ({NEAR_OPTIMAL_BAND:.2%}):"]
        for cell in noisy:
            noise = cell.noise
            assert noise is not None
            verdict = ("band inside the noise" if band_inside_noise(NEAR_OPTIMAL_BAND, noise)
                       else "band resolved")
            lines.append(f"  {cell.cell_id:<24} sd {noise.sd:.4f} nats ({noise.relative:.2%}) from"
                         f" {noise.points} points, {noise.dof} dof: {verdict}")
    elif sweep.cells:
        lines += ["", "noise floor: not measured (no replicate seeds near any optimum)"]
    if report.loss_law is not None:
        lines += [""] + report.loss_law.summary_lines()
    elif report.loss_law_note:
        lines += ["", report.loss_law_note]
    if report.evaluations:
        lines += ["", "held-out evaluation (leave one cell out; regret = loss at the predicted"
                  " point / cell's best - 1):"]
        lines.append(f"  {'estimator':<10} {'mean':>9} {'median':>9} {'worst':>9}  cells")
        for name, ev in report.evaluations.items():
            marker = "  <- selected" if name == report.estimator else ""
            lines.append(f"  {name:<10} {ev.mean:>8.3%} {ev.median:>8.3%} {ev.worst:>8.3%}"
                         f"  {ev.n_evaluated}{marker}")
        for name, fit in report.fits.items():
            if name == report.estimator:
                continue
            lines += [f"  [{name}] {fit.estimator.source}"]
            lines += ["  " + line for line in format_law("lr", fit.lr_law) + format_law("B", fit.batch_law)]
        for name, reason in report.skipped_estimators.items():
            lines.append(f"  {name}: skipped ({reason})")
    loud = [f"  !! {c.cell_id} ({c.label}): {flag}" for c in sweep.cells for flag in c.flags]
    loud += [f"  !! {o_cell.cell_id}: {o['note']}" for o_cell, o in
             zip(sweep.cells, report.selected.cell_optima) if o.get("note")]
    loud += [f"  !! cell {e['cell_id']} ({e['runs']} runs) excluded: {e['reason']}"
             for e in sweep.excluded_cells]
    loud += [f"  !! {w}" for w in sweep.warnings + report.problems]
    if loud:
        lines += ["", "WARNINGS:"] + loud
    if report.fit_json:
        lines += ["", f"wrote {report.fit_json}" + (f" and {len(report.plots)} plots" if report.plots else "")]
    return "\n".join(lines)
