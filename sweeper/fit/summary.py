"""Text pieces of what ``sweeper fit`` prints: a law with its 95% intervals and R^2 (the
whole summary is ``report.FitReport.summary``)."""

from __future__ import annotations

import math
from typing import Any

from sweeper.fit.data import Sweep
from sweeper.fit.fitjson import law_to_dict
from sweeper.fit.laws import PowerLawFit
from sweeper.fit.noise import band_inside_noise
from sweeper.fit.select import NEAR_OPTIMAL_BAND


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
        lines.append(
            "  !! interval UNDETERMINED: "
            + "; ".join(entry["undetermined"])
            + " -- predict and export refuse this law unless forced"
        )
    return lines


def evaluation_lines(evaluations: dict[str, Any], used: str, *, chosen: bool) -> list[str]:
    """The held-out table: every estimator's regret, which one the laws come from and why,
    and how many cells' regret was clipped at 0."""
    lines = [f"  {'estimator':<10} {'mean':>9} {'median':>9} {'worst':>9}  cells"]
    lowest = min(evaluations, key=lambda n: evaluations[n].mean)
    for name, ev in evaluations.items():
        if name != used:
            marker = ""
        elif chosen:
            marker = "  <- used (chosen by auto)"
        elif name == lowest:
            marker = "  <- used (--estimator; also the lowest mean)"
        else:
            marker = f"  <- used (--estimator; {lowest} has the lowest mean: try --estimator auto)"
        clipped = f", {ev.n_clipped_at_zero} clipped at 0" if ev.n_clipped_at_zero else ""
        lines.append(
            f"  {name:<10} {ev.mean:>8.3%} {ev.median:>8.3%} {ev.worst:>8.3%}"
            f"  {ev.n_evaluated}{clipped}{marker}"
        )
    if any(ev.n_clipped_at_zero for ev in evaluations.values()):
        lines.append(
            "  (clipped at 0: the interpolated loss at the prediction was below the cell's"
            " best run, which the measurement cannot tell apart; counted as 0)"
        )
    return lines


def format_noise(sweep: Sweep) -> list[str]:
    """Each cell's noise floor against the near-optimal band (fit/noise.py)."""
    noisy = [cell for cell in sweep.cells if cell.noise is not None]
    if not noisy:
        return ["", "noise floor: not measured (no replicate seeds near any optimum)"]
    lines = [
        "",
        "noise floor (seed-to-seed sd of one run's loss, pooled over replicated points"
        f" near each optimum) against the near-optimal band ({NEAR_OPTIMAL_BAND:.2%}):",
    ]
    for cell in noisy:
        noise = cell.noise
        assert noise is not None
        verdict = "band inside the noise" if band_inside_noise(NEAR_OPTIMAL_BAND, noise) else "band resolved"
        lines.append(
            f"  {cell.cell_id:<24} sd {noise.sd:.4f} nats ({noise.relative:.2%}) from"
            f" {noise.points} points, {noise.dof} dof: {verdict}"
        )
    return lines
