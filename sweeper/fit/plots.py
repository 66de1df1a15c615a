"""PNG plots of a fit (matplotlib, Agg backend: no display needed).

* ``loss_vs_lr.png`` -- per cell, loss against lr, one line per batch size, the near-optimal
  band (best loss to +0.25%) shaded and its runs marked.
* ``heatmaps.png`` -- per cell, loss over the (lr, B) grid, near-optimal runs circled, the
  cell's optimum (selected estimator) and the law's prediction for that cell marked.
* ``laws.png`` -- cell optima against N (lr), D (lr) and D (B) with the fitted law and its
  95% bootstrap band.
* ``regret.png`` -- with --evaluate: held-out regret per cell for every estimator.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType
from typing import Any  # matplotlib's figures and axes (imported lazily, when plotting)

import numpy as np

from sweeper.fit.laws import PowerLawFit
from sweeper.fit.report import FitReport
from sweeper.fit.select import near_optimal_mask

DPI = 110
TICK_PT = 8  # tick labels: legible on a laptop screen at 100% zoom and in the HTML report
TITLE_PT = 9
LEGEND_PT = 7


def _grid(n: int) -> tuple[int, int]:
    cols = min(4, n)
    return math.ceil(n / cols), cols


def _log_axes(ax: Any, plt: ModuleType, y_log: bool = False) -> None:
    ax.set_xscale("log")
    if y_log:
        ax.set_yscale("log")
    ax.tick_params(which="both", labelsize=TICK_PT)


# Tick values per decade, coarse to fine. Chosen here rather than by matplotlib's log
# formatter, which labels every minor tick of a grid spanning less than a decade (the usual
# case) and so runs labels into each other.
TICK_STEPS = (
    (1.0,),
    (1.0, 2.0, 5.0),
    (1.0, 1.5, 2.0, 3.0, 5.0, 7.0),
    (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0),
)
MOST_TICKS = 6


def log_ticks(low: float, high: float) -> list[float]:
    """At most MOST_TICKS round values inside [low, high], from the coarsest step set that
    places at least two there (every other one of the coarsest when even it has too many)."""
    decades = range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1)
    ticks: list[float] = []
    for steps in TICK_STEPS:
        ticks = [m * 10.0**k for k in decades for m in steps if low <= m * 10.0**k <= high]
        if len(ticks) >= 2:
            break
    while len(ticks) > MOST_TICKS:
        ticks = ticks[::2]
    return ticks


def _readable_ticks(ax: Any) -> None:
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    for axis, scale, limits in (
        (ax.xaxis, ax.get_xscale(), ax.get_xlim()),
        (ax.yaxis, ax.get_yscale(), ax.get_ylim()),
    ):
        if scale != "log":
            continue
        axis.set_major_locator(FixedLocator(log_ticks(*sorted(limits))))
        axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.3g}"))
        axis.set_minor_formatter(NullFormatter())


def _empty(ax: Any, reason: str) -> None:
    """A panel with nothing to draw says why instead of staying blank."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.5, 0.5, reason, ha="center", va="center", wrap=True, fontsize=TITLE_PT, transform=ax.transAxes)


def _finish(
    fig: Any, title: str, right_in: float = 0.25, row_gap_in: float = 0.95, column_gap_in: float = 1.0
) -> None:
    """Margins and gaps in inches, not fractions, so titles, tick labels and axis labels keep
    their room whatever the number of panels (subplots_adjust, not tight_layout: the latter
    costs seconds on a 20-panel figure)."""
    for ax in fig.axes:
        _readable_ticks(ax)
    width, height = fig.get_size_inches()
    rows, cols = fig.axes[0].get_gridspec().get_geometry()
    left, right, bottom, top = 0.8, right_in, 0.65, 0.8  # inches
    panel_h = (height - bottom - top - (rows - 1) * row_gap_in) / rows
    panel_w = (width - left - right - (cols - 1) * column_gap_in) / cols
    fig.suptitle(title, fontsize=TITLE_PT + 2, y=1 - 0.15 / height, va="top")
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        bottom=bottom / height,
        top=1 - top / height,
        hspace=row_gap_in / panel_h,
        wspace=column_gap_in / panel_w,
    )


def _law_log(law: PowerLawFit, log_features: dict[str, np.ndarray], coef: np.ndarray) -> np.ndarray:
    """log of the law at points (n,) for coefficient rows coef (p,) -> (n,) or (R, p) -> (R, n)."""
    coef = np.atleast_2d(coef)
    value = coef[:, :1] + sum(
        coef[:, 1 + k : 2 + k] * log_features[v][None, :] for k, v in enumerate(law.variables)
    )
    return value[0] if value.shape[0] == 1 else value


def _band(law: PowerLawFit, log_features: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    centre = np.exp(_law_log(law, log_features, law.coef))
    if len(law.bootstrap) < 2:
        return centre, centre, centre
    lo, hi = np.percentile(_law_log(law, log_features, law.bootstrap), [2.5, 97.5], axis=0)
    return centre, np.exp(lo), np.exp(hi)


def write_plots(report: FitReport, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in render_figures(report).items():
        fig.savefig(folder / f"{name}.png", dpi=DPI)
        plt.close(fig)
        written.append(folder / f"{name}.png")
    return written


def render_figures(report: FitReport) -> dict[str, Any]:
    """name -> matplotlib Figure (unsaved; the caller closes them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = {
        "loss_vs_lr": _loss_vs_lr(report, plt),
        "heatmaps": _heatmaps(report, plt),
        "laws": _laws(report, plt),
    }
    if report.evaluations:
        figures["regret"] = _regret(report, plt)
    return figures


def _loss_vs_lr(report: FitReport, plt: ModuleType) -> Any:
    cells = report.sweep.cells
    rows, cols = _grid(len(cells))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, cell in zip(axes.flat, cells):
        near = near_optimal_mask(cell.loss, 0.0025)
        for b in np.unique(cell.batch_tokens):
            on = cell.batch_tokens == b
            order = np.argsort(cell.lr[on])
            ax.plot(cell.lr[on][order], cell.loss[on][order], "-o", ms=3, lw=1, label=f"B={b:.3g}")
        ax.axhspan(cell.best_loss, cell.best_loss * 1.0025, color="green", alpha=0.15)
        ax.scatter(cell.lr[near], cell.loss[near], s=40, facecolors="none", edgecolors="green")
        _log_axes(ax, plt)
        top = np.percentile(cell.loss, 75)
        ax.set_ylim(cell.best_loss * 0.998, max(top, cell.best_loss * 1.01))
        ax.set_title(cell.label, fontsize=TITLE_PT)
        ax.set_xlabel("peak lr", fontsize=TICK_PT)
        ax.set_ylabel("loss (nats/token)", fontsize=TICK_PT)
    for ax in axes.flat[len(cells) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=LEGEND_PT)
    _finish(fig, "loss vs lr per cell (green: within 0.25% of the best)")
    return fig


def _heatmaps(report: FitReport, plt: ModuleType) -> Any:
    from sweeper.fit.estimators import cell_features

    cells = report.sweep.cells
    features = cell_features(report.sweep)
    rows, cols = _grid(len(cells))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for c, (ax, cell) in enumerate(zip(axes.flat, cells)):
        excess = 100.0 * (cell.loss / cell.best_loss - 1.0)
        # One colour scale for every panel (0 to 2% above the best), so cells compare.
        sc = ax.scatter(
            cell.lr,
            cell.batch_tokens,
            c=np.minimum(excess, 2.0),
            vmin=0.0,
            vmax=2.0,
            cmap="viridis_r",
            s=60,
            marker="s",
        )
        near = near_optimal_mask(cell.loss, 0.0025)
        ax.scatter(
            cell.lr[near],
            cell.batch_tokens[near],
            s=110,
            facecolors="none",
            edgecolors="red",
            label="within 0.25%",
        )
        optimum = report.selected.cell_optima[c]
        ax.plot(
            optimum["lr"],
            optimum["batch_size_tokens"],
            "x",
            color="black",
            ms=9,
            label=f"optimum ({report.estimator})",
        )
        cell_log = {v: np.array([features[v][c]]) for v in features}
        lr_hat = np.exp(_law_log(report.lr_law, cell_log, report.lr_law.coef))[0]
        b_hat = np.exp(_law_log(report.batch_law, cell_log, report.batch_law.coef))[0]
        ax.plot(lr_hat, b_hat, "*", color="magenta", ms=11, label="law prediction")
        _log_axes(ax, plt, y_log=True)
        ax.set_title(cell.label, fontsize=TITLE_PT)
        ax.set_xlabel("peak lr", fontsize=TICK_PT)
        ax.set_ylabel("B (tokens)", fontsize=TICK_PT)
    for ax in axes.flat[len(cells) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=LEGEND_PT)
    _finish(
        fig,
        "loss over the (lr, B tokens) grid per cell: near-optimal set, optimum and law prediction",
        right_in=1.3,
    )
    width, height = fig.get_size_inches()
    bar = fig.add_axes([1 - 0.95 / width, 0.3, 0.15 / width, 0.4])
    fig.colorbar(sc, cax=bar).set_label("% above the cell's best loss", fontsize=TICK_PT)
    bar.tick_params(labelsize=TICK_PT)
    return fig


def _laws(report: FitReport, plt: ModuleType) -> Any:
    from sweeper.fit.estimators import cell_features

    sweep = report.sweep
    features = cell_features(sweep)
    optima = report.selected.cell_optima
    opt_lr = np.array([o["lr"] for o in optima])
    opt_b = np.array([o["batch_size_tokens"] for o in optima])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), squeeze=False)
    axes = axes[0]
    panels = [
        (axes[0], report.lr_law, opt_lr, "N" if "N" in report.lr_law.variables else "C", "D"),
        (axes[1], report.lr_law, opt_lr, "D" if "D" in report.lr_law.variables else "C", "N"),
        (axes[2], report.batch_law, opt_b, report.batch_law.variables[0], "N"),
    ]
    for ax, law, optimum, x_var, group_var in panels:
        reason = _nothing_to_draw(features[x_var], optimum, x_var)
        if reason:
            ax.set_title(law.formula(), fontsize=TITLE_PT)
            _empty(ax, reason)
            continue
        groups = np.unique(np.round(features[group_var], 9))
        colours = plt.cm.plasma(np.linspace(0, 0.85, len(groups)))
        for g, colour in zip(groups, colours):
            on = np.isclose(features[group_var], g)
            xs = np.exp(features[x_var][on])
            ax.scatter(xs, optimum[on], color=colour, label=f"{group_var}={math.exp(g):.3g}")
            # The law along this slice: the other variables held at the group's value.
            line = np.linspace(features[x_var].min(), features[x_var].max(), 50)
            logs = {v: np.full(50, features[v][on][0]) for v in features}
            logs[x_var] = line
            if x_var == "C" or "C" not in law.variables:
                centre, lo, hi = _band(law, logs)
                ax.plot(np.exp(line), centre, color=colour, lw=1)
                ax.fill_between(np.exp(line), lo, hi, color=colour, alpha=0.15)
        _log_axes(ax, plt, y_log=True)
        finite = optimum[np.isfinite(optimum)]
        if np.ptp(np.log(finite)) < math.log(1.5):
            # Every optimum (nearly) equal: autoscaling would zoom into float noise and show
            # no tick at all, so the axis spans a factor 4 around them and says why.
            middle = math.exp(float(np.mean(np.log(finite))))
            ax.set_ylim(middle / 2, middle * 2)
            ax.text(
                0.5,
                0.04,
                f"every cell's optimum is {middle:.3g}: the law is flat here",
                ha="center",
                transform=ax.transAxes,
                fontsize=TICK_PT,
            )
        ax.set_xlabel(x_var, fontsize=TICK_PT)
        ax.set_ylabel("optimal lr" if law.target == "lr" else "optimal B (tokens)", fontsize=TICK_PT)
        ax.set_title(law.formula(), fontsize=TITLE_PT)
        ax.legend(fontsize=LEGEND_PT)
    _finish(fig, f"cell optima ({report.estimator}) and fitted laws with 95% bootstrap bands")
    return fig


def _nothing_to_draw(log_x: np.ndarray, optimum: np.ndarray, x_var: str) -> str:
    """Why a law panel would be blank or a single vertical line, or '' when it is not."""
    if not np.isfinite(optimum).any():
        return "no cell has a finite optimum to plot"
    if np.ptp(log_x) == 0:
        return f"every cell has the same {x_var}: the law's slope in {x_var} is not measured here"
    return ""


def _regret(report: FitReport, plt: ModuleType) -> Any:
    evaluations = report.evaluations or {}
    cells = report.sweep.cells
    fig, ax = plt.subplots(figsize=(min(24, max(6, 0.5 * len(cells) + 2)), 4.5))
    width = 0.8 / max(1, len(evaluations))
    for k, (name, ev) in enumerate(evaluations.items()):
        values = [100 * (c["regret"] if c["regret"] is not None else np.nan) for c in ev.per_cell]
        ax.bar(
            np.arange(len(cells)) + k * width,
            values,
            width,
            label=f"{name} (mean {ev.mean:.3%}, worst {ev.worst:.3%})",
        )
    ax.set_xticks(np.arange(len(cells)) + 0.4 - width / 2)
    # Upright labels (rotated by 90 degrees): a slanted one's box runs into its neighbours'.
    ax.set_xticklabels([c.label for c in cells], rotation=90, ha="center", fontsize=TICK_PT)
    ax.tick_params(axis="y", labelsize=TICK_PT)
    ax.set_ylabel("held-out regret (%)", fontsize=TICK_PT)
    ax.legend(fontsize=LEGEND_PT)
    # Room below the axes for the longest label: about 0.075 in per character at TICK_PT.
    label_in = 0.075 * max(len(c.label) for c in cells)
    fig.set_size_inches(fig.get_size_inches()[0], 3.4 + label_in)
    _finish(fig, "leave-one-cell-out regret per cell")
    fig.subplots_adjust(bottom=(0.45 + label_in) / fig.get_size_inches()[1])
    return fig
