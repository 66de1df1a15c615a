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

DPI = 80


def _grid(n: int) -> tuple[int, int]:
    cols = min(4, n)
    return math.ceil(n / cols), cols


def _log_axes(ax: Any, plt: ModuleType, y_log: bool = False) -> None:
    """Log axes with small tick labels (grids often span less than a decade, so the minor
    ticks carry the only labels)."""
    ax.set_xscale("log")
    if y_log:
        ax.set_yscale("log")
    ax.tick_params(which="both", labelsize=5)


def _finish(fig: Any, path: Path, plt: ModuleType, title: str, right: float = 0.97, top: float = 0.92) -> Path:
    # subplots_adjust, not tight_layout: the latter costs seconds on a 20-panel figure.
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.06, right=right, bottom=0.1, top=top, hspace=0.45, wspace=0.3)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _law_log(law: PowerLawFit, log_features: dict[str, np.ndarray], coef: np.ndarray) -> np.ndarray:
    """log of the law at points (n,) for coefficient rows coef (p,) -> (n,) or (R, p) -> (R, n)."""
    coef = np.atleast_2d(coef)
    value = coef[:, :1] + sum(coef[:, 1 + k:2 + k] * log_features[v][None, :]
                              for k, v in enumerate(law.variables))
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
    written = [
        _loss_vs_lr(report, folder / "loss_vs_lr.png", plt),
        _heatmaps(report, folder / "heatmaps.png", plt),
        _laws(report, folder / "laws.png", plt),
    ]
    if report.evaluations:
        written.append(_regret(report, folder / "regret.png", plt))
    return written


def _loss_vs_lr(report: FitReport, path: Path, plt: ModuleType) -> Path:
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
        ax.set_title(cell.label, fontsize=8)
        ax.set_xlabel("peak lr", fontsize=7)
    for ax in axes.flat[len(cells):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=5)
    return _finish(fig, path, plt, "loss vs lr per cell (green: within 0.25% of the best)")


def _heatmaps(report: FitReport, path: Path, plt: ModuleType) -> Path:
    from sweeper.fit.estimators import cell_features

    cells = report.sweep.cells
    features = cell_features(report.sweep)
    rows, cols = _grid(len(cells))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for c, (ax, cell) in enumerate(zip(axes.flat, cells)):
        excess = 100.0 * (cell.loss / cell.best_loss - 1.0)
        # One colour scale for every panel (0 to 2% above the best), so cells compare.
        sc = ax.scatter(cell.lr, cell.batch_tokens, c=np.minimum(excess, 2.0), vmin=0.0, vmax=2.0,
                        cmap="viridis_r", s=60, marker="s")
        near = near_optimal_mask(cell.loss, 0.0025)
        ax.scatter(cell.lr[near], cell.batch_tokens[near], s=110, facecolors="none",
                   edgecolors="red", label="within 0.25%")
        optimum = report.selected.cell_optima[c]
        ax.plot(optimum["lr"], optimum["batch_size_tokens"], "x", color="black", ms=9,
                label=f"optimum ({report.estimator})")
        cell_log = {v: np.array([features[v][c]]) for v in features}
        lr_hat = np.exp(_law_log(report.lr_law, cell_log, report.lr_law.coef))[0]
        b_hat = np.exp(_law_log(report.batch_law, cell_log, report.batch_law.coef))[0]
        ax.plot(lr_hat, b_hat, "*", color="magenta", ms=11, label="law prediction")
        _log_axes(ax, plt, y_log=True)
        ax.set_title(cell.label, fontsize=8)
    for ax in axes.flat[len(cells):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=5)
    fig.colorbar(sc, cax=fig.add_axes([0.94, 0.3, 0.012, 0.4]), label="% above the cell's best loss")
    return _finish(fig, path, plt, "loss over the (lr, B tokens) grid per cell: near-optimal set,"
                   " optimum and law prediction", right=0.91)


def _laws(report: FitReport, path: Path, plt: ModuleType) -> Path:
    from sweeper.fit.estimators import cell_features

    sweep = report.sweep
    features = cell_features(sweep)
    optima = report.selected.cell_optima
    opt_lr = np.array([o["lr"] for o in optima])
    opt_b = np.array([o["batch_size_tokens"] for o in optima])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    panels = [
        (axes[0], report.lr_law, opt_lr, "N" if "N" in report.lr_law.variables else "C", "D"),
        (axes[1], report.lr_law, opt_lr, "D" if "D" in report.lr_law.variables else "C", "N"),
        (axes[2], report.batch_law, opt_b, report.batch_law.variables[0], "N"),
    ]
    for ax, law, optimum, x_var, group_var in panels:
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
        ax.set_xlabel(x_var)
        ax.set_ylabel("optimal lr" if law.target == "lr" else "optimal B (tokens)")
        ax.set_title(law.formula(), fontsize=9)
        ax.legend(fontsize=6)
    return _finish(fig, path, plt,
                   f"cell optima ({report.estimator}) and fitted laws with 95% bootstrap bands",
                   top=0.84)


def _regret(report: FitReport, path: Path, plt: ModuleType) -> Path:
    evaluations = report.evaluations or {}
    cells = report.sweep.cells
    fig, ax = plt.subplots(figsize=(min(16, max(6, 0.7 * len(cells) + 2)), 4.5))
    width = 0.8 / max(1, len(evaluations))
    for k, (name, ev) in enumerate(evaluations.items()):
        values = [100 * (c["regret"] if c["regret"] is not None else np.nan) for c in ev.per_cell]
        ax.bar(np.arange(len(cells)) + k * width, values, width,
               label=f"{name} (mean {ev.mean:.3%}, worst {ev.worst:.3%})")
    ax.set_xticks(np.arange(len(cells)) + 0.4 - width / 2)
    ax.set_xticklabels([c.label for c in cells], rotation=50, ha="right", fontsize=6)
    ax.set_ylabel("held-out regret (%)")
    ax.set_title("leave-one-cell-out regret per cell")
    ax.legend(fontsize=7)
    fig.subplots_adjust(bottom=0.3)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
