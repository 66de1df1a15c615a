"""The text ``sweeper fit`` prints: laws with 95% intervals, R^2, near-optimal counts, flags,
and (with --evaluate) the held-out regret of every estimator."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from sweeper.fit.fitjson import law_to_dict
from sweeper.fit.laws import PowerLawFit

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
        interval = entry["intervals"][name]
        shown = "UNDETERMINED" if interval is None else f"[{_num(interval[0])}, {_num(interval[1])}]"
        lines.append(f"  {name:<6} = {_num(value):>10}   95% interval {shown}")
    r2 = f"{law.r2:.3f}" if math.isfinite(law.r2) else "undefined"
    lines.append(
        f"  R^2 = {r2} on {law.n_observations} points from {law.n_cells} cells;"
        f" {len(law.bootstrap)} bootstrap fits kept, {law.n_degenerate} singular discarded"
        f" ({entry['discarded_share']:.0%})"
    )
    if entry["undetermined"]:
        lines.append("  !! interval UNDETERMINED: " + "; ".join(entry["undetermined"])
                     + " -- predict and export refuse this law unless forced")
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
    ]
    if report.choice is not None:
        lines.append(f"  chosen by --estimator auto: {report.choice.reason}")
    lines.append("")
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
    if report.loss_law is not None:
        lines += [""] + report.loss_law.summary_lines()
    elif report.loss_law_note:
        lines += ["", report.loss_law_note]
    if report.evaluations:
        lines += ["", "held-out evaluation (leave one cell out; regret = loss at the predicted"
                  " point / cell's best - 1):"]
        lines.append(f"  {'estimator':<10} {'mean':>9} {'median':>9} {'worst':>9}  cells")
        lowest = min(report.evaluations, key=lambda n: report.evaluations[n].mean)
        for name, ev in report.evaluations.items():
            if name != report.estimator:
                marker = ""
            elif report.choice is not None:
                marker = "  <- used (chosen by auto)"
            elif name == lowest:
                marker = "  <- used (--estimator; also the lowest mean)"
            else:
                marker = f"  <- used (--estimator; {lowest} has the lowest mean: try --estimator auto)"
            clipped = f", {ev.n_clipped_at_zero} clipped at 0" if ev.n_clipped_at_zero else ""
            lines.append(f"  {name:<10} {ev.mean:>8.3%} {ev.median:>8.3%} {ev.worst:>8.3%}"
                         f"  {ev.n_evaluated}{clipped}{marker}")
        if any(ev.n_clipped_at_zero for ev in report.evaluations.values()):
            lines.append("  (clipped at 0: the interpolated loss at the prediction was below the"
                         " cell's best run, which the measurement cannot tell apart; counted as 0)")
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
