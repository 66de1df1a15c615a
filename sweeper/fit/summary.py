"""Text pieces of what ``sweeper fit`` prints: a law with its 95% intervals and R^2 (the
whole summary is ``report.FitReport.summary``)."""

from __future__ import annotations

import math

from sweeper.fit.fitjson import law_to_dict
from sweeper.fit.laws import PowerLawFit


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
