"""The report's page: ReportInputs -> one HTML string with everything inline.

Hand-written HTML rather than a template engine: the page is a few tables and images, and
every value goes through ``html.escape`` here, so no dependency is needed for it.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
from collections import Counter
from collections.abc import Iterable
from html import escape
from typing import Any

from sweeper.fit.fitjson import law_to_dict
from sweeper.report import ReportInputs

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1280px; padding: 1.2em 2em 3em; color: #1b1b1b; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .6em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; vertical-align: top; }
th { background: #f4f4f4; } td.text, th.text { text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; }
.warnings li { color: #8a4b00; } table.cells td:last-child { text-align: left; min-width: 18em; } .muted { color: #666; }
.kpi { display: inline-block; margin: 0 1.6em .6em 0; } .kpi b { font-size: 1.3em; display: block; }
pre { background: #f7f7f7; padding: .8em; overflow-x: auto; font-size: 12.5px; }
"""

FIGURES = [
    (
        "loss_vs_lr",
        "Each cell's landscape: loss against peak learning rate, one line per batch size; "
        "the green band holds the runs within 0.25% of the cell's best.",
    ),
    (
        "heatmaps",
        "Each cell's loss over the (lr, batch) grid: near-optimal runs circled, the cell's "
        "optimum (x) and the fitted law's prediction for that cell (star).",
    ),
    ("laws", "Cell optima and the fitted laws with their 95% bootstrap bands."),
    (
        "regret",
        "Held-out evaluation: each cell left out in turn, predicted by the laws fitted on "
        "the others; regret = loss at the predicted point over the cell's best, minus 1.",
    ),
]


def render(inputs: ReportInputs) -> str:
    fit = inputs.fit
    sections = [
        _summary(inputs),
        _section("Warnings", _warnings(inputs.warnings)),
        _section("Fitted laws", _laws(fit) + _figure(inputs, "laws")),
        _section(
            "Landscapes of the cells",
            _cells(fit) + _figure(inputs, "loss_vs_lr") + _figure(inputs, "heatmaps"),
        ),
        _section("Held-out evaluation", _evaluation(fit) + _figure(inputs, "regret")),
        _section("Loss law", _loss_law(fit)),
        _section("Predictions", _predictions(inputs)),
        _section("Trials", _trials(inputs.trial_rows)),
        _section("The fit as `sweeper fit` prints it", f"<pre>{escape(fit.summary())}</pre>"),
    ]
    title = f"sweep {fit.sweep.name}: report"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        f'<h1>{escape(title)}</h1><p class="muted">{escape(str(inputs.run_dir))}, written '
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC by sweeper report</p>"
        + "".join(sections)
        + "</body></html>\n"
    )


# ---- pieces -----------------------------------------------------------------------------


def _section(title: str, body: str) -> str:
    return f"<section><h2>{escape(title)}</h2>{body}</section>"


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]], text_columns: int = 1, css: str = "") -> str:
    head = "".join(
        f'<th class="{"text" if i < text_columns else ""}">{escape(h)}</th>' for i, h in enumerate(header)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"text" if i < text_columns else ""}">{escape(_fmt(v))}</td>'
            for i, v in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        return f"{value:.4g}" if 1e-3 <= abs(value) < 1e5 or value == 0 else f"{value:.3e}"
    return str(value)


def _figure(inputs: ReportInputs, name: str) -> str:
    caption = dict(FIGURES)[name]
    png = inputs.figures.get(name)
    if png is None:
        return f'<p class="muted">No {escape(name)} figure: {escape(_missing_reason(name))}</p>'
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img alt="{escape(name)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _missing_reason(name: str) -> str:
    return "the fit produced none" if name != "regret" else "no estimator could be evaluated"


def _summary(inputs: ReportInputs) -> str:
    rows = inputs.trial_rows
    counts = Counter(row["status"] for row in rows)
    compute = sum(row["wall_seconds"] or 0.0 for row in rows)
    planned = inputs.progress.get("planned")
    state = (
        "finished"
        if inputs.progress.get("finished")
        else "not finished (a driver runs, or stopped early)"
        if inputs.progress
        else "imported results"
    )
    kpis = [
        ("trials recorded", len(rows)),
        ("planned", planned if planned is not None else "–"),
        ("cells fitted", len(inputs.fit.sweep.cells)),
        ("estimator", inputs.fit.estimator),
        ("trial time, summed", f"{compute / 60:.1f} min"),
        ("sweep", state),
    ]
    kpis += [(status, n) for status, n in sorted(counts.items())]
    return (
        "<section>"
        + "".join(f'<span class="kpi"><b>{escape(_fmt(v))}</b>{escape(k)}</span>' for k, v in kpis)
        + "</section>"
    )


def _warnings(warnings: list[str]) -> str:
    if not warnings:
        return "<p>None: every cell's optimum lies inside its grid and the fit raised no flag.</p>"
    return '<ul class="warnings">' + "".join(f"<li>{escape(w)}</li>" for w in warnings) + "</ul>"


def _laws(fit) -> str:  # noqa: ANN001 (fit.report.FitReport)
    rows = []
    for title, law in (("learning rate", fit.lr_law), ("batch size (tokens)", fit.batch_law)):
        entry = law_to_dict(law, with_samples=False)
        for name, value in entry["coefficients"].items():
            interval = entry["intervals"][name]  # None: undetermined (see sweeper.uncertainty)
            low, high = interval if interval is not None else ("UNDETERMINED", "UNDETERMINED")
            rows.append((title, entry["formula"], name, value, low, high, law.r2, law.n_cells))
    return (
        f"<p>Estimator <b>{escape(fit.estimator)}</b>: {escape(fit.selected.estimator.source)}; "
        f"{fit.n_bootstrap} bootstrap resamples (cells, and runs within cells).</p>"
        + _table(
            ["law", "formula", "coefficient", "value", "95% low", "95% high", "R²", "cells"],
            rows,
            text_columns=3,
        )
    )


def _cells(fit) -> str:  # noqa: ANN001
    rows = []
    for cell, optimum in zip(fit.sweep.cells, fit.selected.cell_optima):
        best = cell.best_index
        # The flags' first words only ("EDGE OF GRID"): the warnings section has them whole.
        flags = "; ".join(
            flag.split(":")[0].split(" (")[0]
            for flag in list(cell.flags) + ([optimum["note"]] if optimum.get("note") else [])
        )
        rows.append(
            (
                cell.cell_id,
                float(cell.n_params),
                float(cell.tokens),
                int(cell.loss.size),
                cell.best_loss,
                float(cell.lr[best]),
                float(cell.batch_tokens[best]),
                optimum["lr"],
                optimum["batch_size_tokens"],
                optimum["near_optimal_runs"],
                flags or "",
            )
        )
    return _table(
        [
            "cell",
            "N",
            "D",
            "runs",
            "best loss",
            "best lr",
            "best B (tok)",
            "optimum lr",
            "optimum B (tok)",
            "near-optimal",
            "flags",
        ],
        rows,
        css="cells",
    )


def _evaluation(fit) -> str:  # noqa: ANN001
    if not fit.evaluations:
        return "<p>No estimator could be evaluated on this sweep.</p>"
    rows = [
        (
            name + (" (selected)" if name == fit.estimator else ""),
            ev.mean,
            ev.median,
            ev.worst,
            ev.n_evaluated,
        )
        for name, ev in fit.evaluations.items()
    ]
    skipped = "".join(
        f"<li>{escape(name)}: skipped ({escape(reason)})</li>"
        for name, reason in fit.skipped_estimators.items()
    )
    return _table(["estimator", "mean regret", "median regret", "worst regret", "cells"], rows) + (
        f"<ul>{skipped}</ul>" if skipped else ""
    )


def _loss_law(fit) -> str:  # noqa: ANN001
    if fit.loss_law is None:
        return f"<p>{escape(fit.loss_law_note or 'Not fitted.')}</p>"
    entry = fit.loss_law.to_dict()
    rows = [
        (name, value, *(entry["intervals"].get(name) or (None, None)))
        for name, value in entry["coefficients"].items()
    ]
    return (
        f"<p>{escape(entry['formula'])} on the cells' best losses ({escape(entry['method'])}).</p>"
        + _table(["coefficient", "value", "95% low", "95% high"], rows)
    )


def _predictions(inputs: ReportInputs) -> str:
    if not inputs.predictions:
        return (
            "<p>No targets: add <code>targets:</code> to the recipe, or pass "
            "<code>sweeper report RUN_DIR --targets TARGETS.yaml</code>.</p>"
        )
    rows = []
    for name, p in inputs.predictions:
        rows.append(
            (
                name,
                p.n_params,
                p.tokens,
                p.seq_len,
                p.lr,
                p.lr_interval[0],
                p.lr_interval[1],
                p.batch_size_tokens,
                p.batch_size_sequences,
                p.loss,
                f"N x{p.extrapolation_n_params:.3g}, D x{p.extrapolation_tokens:.3g}",
            )
        )
    return f'<p class="muted">Targets: {escape(inputs.targets_source)}.</p>' + _table(
        [
            "target",
            "N",
            "D",
            "seq len",
            "lr",
            "lr 95% low",
            "lr 95% high",
            "B (tokens)",
            "B (sequences)",
            "expected loss",
            "beyond the fitted range",
        ],
        rows,
    )


def _trials(rows: list[dict[str, Any]]) -> str:
    ordered = sorted(rows, key=lambda r: (r["cell_id"] or "", r["lr"] or 0.0, r["batch_size"] or 0))
    return (
        "<details><summary>every trial ("
        + str(len(rows))
        + ")</summary>"
        + _table(
            ["cell", "status", "lr", "B (seq)", "loss", "steps", "seconds", "error"],
            [
                (
                    r["cell_id"],
                    r["status"],
                    r["lr"],
                    r["batch_size"],
                    r["loss"],
                    r["steps"],
                    r["wall_seconds"],
                    (r["error"] or "")[:120],
                )
                for r in ordered
            ],
            text_columns=2,
        )
        + "</details>"
    )
