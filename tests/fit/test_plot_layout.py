"""The fit's figures are rendered and read as a person would: every label legible, no text
on top of other text, no blank panel without a sentence saying why."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from sweeper.fit import build_report, load_sweep
from sweeper.fit.plots import render_figures
from tests.fit.synthetic import Truth, synthetic_rows, write_run

MIN_POINTS = 7.0


def visible_texts(fig) -> list[tuple[str, object, object]]:  # noqa: ANN001
    """(owner, text, bbox) of every drawn, non-empty text: titles, axis labels, the tick
    labels inside each axis' view, legend entries and free text."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    found = []
    if fig._suptitle is not None:
        found.append(("figure", fig._suptitle))
    for index, ax in enumerate(fig.axes):
        owner = f"axes {index}"
        found += [(owner, ax.title), (owner, ax.xaxis.label), (owner, ax.yaxis.label)]
        found += [(owner, text) for text in ax.texts]
        legend = ax.get_legend()
        if legend is not None:
            found += [(owner, text) for text in legend.get_texts()]
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            for locs, labels in (
                (axis.get_majorticklocs(), axis.get_majorticklabels()),
                (axis.get_minorticklocs(), axis.get_minorticklabels()),
            ):
                found += [
                    (f"{owner} ticks", label)
                    for loc, label in zip(locs, labels)
                    if low * (1 - 1e-9) <= loc <= high * (1 + 1e-9)
                ]
    return [
        (owner, text, text.get_window_extent(renderer))
        for owner, text in found
        if text.get_visible() and text.get_text().strip()
    ]


def overlaps(first, second) -> bool:  # noqa: ANN001
    width = min(first.x1, second.x1) - max(first.x0, second.x0)
    height = min(first.y1, second.y1) - max(first.y0, second.y0)
    return width > 1 and height > 1


def check_figure(name: str, fig) -> list[str]:  # noqa: ANN001
    problems = []
    texts = visible_texts(fig)
    for owner, text, _ in texts:
        if text.get_fontsize() < MIN_POINTS:
            problems.append(f"{name}: '{text.get_text()}' ({owner}) is {text.get_fontsize():.1f} pt")
    for (owner_a, a, box_a), (owner_b, b, box_b) in itertools.combinations(texts, 2):
        if overlaps(box_a, box_b):
            problems.append(f"{name}: '{a.get_text()}' ({owner_a}) overlaps '{b.get_text()}' ({owner_b})")
    width, height = fig.get_size_inches() * fig.dpi
    for owner, text, box in texts:
        if box.x0 < -1 or box.y0 < -1 or box.x1 > width + 1 or box.y1 > height + 1:
            problems.append(f"{name}: '{text.get_text()}' ({owner}) is cut off by the figure's edge")
    for index, ax in enumerate(fig.axes):
        drawn = ax.lines or ax.collections or ax.patches or ax.images or ax.texts
        if ax.axison and not drawn:
            problems.append(f"{name}: axes {index} is blank and says nothing")
    return problems


def figures_for(run_dir: Path) -> dict:
    sweep, _ = load_sweep(run_dir)
    return render_figures(build_report(sweep, estimator="smooth", n_bootstrap=20, evaluate=True, seed=0))


@pytest.mark.parametrize("cells", [(2, 2), (5, 4)], ids=["4 cells", "20 cells"])
def test_figures_are_legible(tmp_path, cells) -> None:
    sizes, budgets = np.geomspace(1e6, 1e8, cells[0]), np.geomspace(3e8, 1e10, cells[1])
    run = write_run(
        tmp_path, synthetic_rows(Truth(), sizes=tuple(sizes), budgets=tuple(budgets), n_lr=5, n_b=3)
    )
    import matplotlib.pyplot as plt

    figures = figures_for(run)
    assert set(figures) == {"loss_vs_lr", "heatmaps", "laws", "regret"}
    problems = [p for name, fig in figures.items() for p in check_figure(name, fig)]
    plt.close("all")
    assert not problems, "\n".join(problems[:20])


def test_a_flat_law_is_drawn_and_said(tmp_path) -> None:
    # Every cell's grid and optimum batch the same (gamma = 0, grids centred on the truth):
    # the batch panel must show its points on a readable axis and say that the law is flat.
    rows = synthetic_rows(
        Truth(c=3000.0, gamma=0.0), sizes=(1e6, 1e7), budgets=(3e8, 3e9), n_lr=5, n_b=3, offset=0.0
    )
    import matplotlib.pyplot as plt

    laws = figures_for(write_run(tmp_path, rows))["laws"]
    batch_panel = laws.axes[2]
    notes = [text.get_text() for text in batch_panel.texts]
    low, high = batch_panel.get_ylim()
    problems = check_figure("laws", laws)
    plt.close("all")
    assert any("flat" in note for note in notes), notes
    assert high / low >= 2  # a readable span, not float noise around one value
    assert not problems, "\n".join(problems)
