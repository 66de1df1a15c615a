"""The sweep report: one self-contained HTML file that outlives the cluster.

``write_report(run_dir)`` reads the run folder (Parquet trials, the saved recipe and
progress, fit.json's settings when a fit was written), fits the laws in memory with the
held-out evaluation, and writes ``report.html``: the sweep's summary, every cell's
landscape, the fitted laws with their bands, the held-out evaluation, the loss law, the
predictions for the recipe's or the given targets, and every warning. Figures are PNGs
inlined as data: URIs and the style sheet is inline, so the file opens with no network and
can be mailed as it is. Imports numpy, pyarrow and matplotlib (through fit/); never Ray or
torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeper.errors import SweeperError

REPORT_FILE = "report.html"


class ReportError(SweeperError):
    """A run folder the report cannot be written for (missing, no trials, unfittable)."""


@dataclass
class ReportInputs:
    """Everything the page shows, gathered before any HTML is written."""

    run_dir: Path
    fit: Any  # fit.report.FitReport, with evaluations
    figures: dict[str, bytes]  # name -> PNG
    predictions: list[tuple[str, Any]]  # (target name, hparams.Prediction)
    targets_source: str
    progress: dict[str, Any] = field(default_factory=dict)
    trial_rows: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def gather(
    run_dir: str | Path,
    *,
    targets: str | Path | None = None,
    n_bootstrap: int | None = None,
    seed: int | None = None,
) -> ReportInputs:
    """Fit and render everything the report shows. The estimator, bootstrap count and seed
    are fit.json's when the run folder has one (so the page shows the fit `predict` uses),
    else the fitter's defaults."""
    import tempfile

    from sweeper.fit import DEFAULT_ESTIMATOR, FitError, build_report, load_sweep
    from sweeper.fit.plots import write_plots
    from sweeper.hparams import Hparams
    from sweeper.results import read_trials

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such run folder")
    fit_json = _read_json(run_dir / "fit.json")
    estimator = fit_json.get("estimator", DEFAULT_ESTIMATOR)
    bootstrap = fit_json.get("bootstrap", {})
    n_bootstrap = n_bootstrap if n_bootstrap is not None else int(bootstrap.get("n_requested", 1000))
    seed = seed if seed is not None else int(bootstrap.get("seed", 0))
    try:
        sweep, problems = load_sweep(run_dir)
        fit = build_report(sweep, estimator=estimator, n_bootstrap=n_bootstrap, evaluate=True, seed=seed)
    except FitError as error:
        raise ReportError(f"{run_dir}: cannot fit the laws for the report: {error}") from None
    fit.problems = problems
    with tempfile.TemporaryDirectory() as folder:
        figures = {path.stem: path.read_bytes() for path in write_plots(fit, Path(folder))}
    chosen, source = _targets(run_dir, targets)
    hparams = Hparams(json.loads(json.dumps(fit.document(), default=_plain)))
    predictions = [(t.name, hparams.predict(t.params, t.tokens, t.seq_len)) for t in chosen]
    warnings = [f"{c.cell_id} ({c.label}): {flag}" for c in sweep.cells for flag in c.flags]
    warnings += [
        f"{c.cell_id}: {o['note']}" for c, o in zip(sweep.cells, fit.selected.cell_optima) if o.get("note")
    ]
    warnings += [
        f"cell {e['cell_id']} ({e['runs']} runs) excluded: {e['reason']}" for e in sweep.excluded_cells
    ]
    warnings += sweep.warnings + problems
    if fit.loss_law is None and fit.loss_law_note:
        warnings.append(fit.loss_law_note)
    warnings += [f"target {name}: {w}" for name, p in predictions for w in p.warnings]
    columns = ["cell_id", "status", "lr", "batch_size", "loss", "steps", "wall_seconds", "error"]
    rows = read_trials(run_dir).table.select(columns).to_pylist()
    return ReportInputs(
        run_dir,
        fit,
        figures,
        predictions,
        source,
        progress=_read_json(run_dir / "progress.json"),
        trial_rows=rows,
        warnings=warnings,
    )


def write_report(run_dir: str | Path, out: str | Path | None = None, **options: Any) -> Path:
    """Write the report (default ``RUN_DIR/report.html``) atomically; return its path."""
    from sweeper.report.html import render
    from sweeper.runfolder import atomic_write

    inputs = gather(run_dir, **options)
    return atomic_write(Path(out) if out else Path(run_dir) / REPORT_FILE, render(inputs))


def _targets(run_dir: Path, given: str | Path | None) -> tuple[list, str]:
    """The given targets file, else the ``targets:`` of the recipe saved in the run folder."""
    from sweeper.export.table import ExportError, Target, load_targets

    if given is not None:
        try:
            return load_targets(given), str(given)
        except ExportError as error:
            raise ReportError(str(error)) from None
    recipe_path = run_dir / "recipe.yaml"
    if recipe_path.is_file():
        import yaml

        entries = (yaml.safe_load(recipe_path.read_text()) or {}).get("targets") or []
        return [
            Target(str(e["name"]), float(e["params"]), float(e["tokens"]), int(e["seq_len"])) for e in entries
        ], f"the recipe's targets ({recipe_path})"
    return [], "none"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def _plain(value: Any) -> Any:
    """fit.document() holds numpy scalars in places; JSON-round-trip them to plain numbers."""
    return value.item() if hasattr(value, "item") else str(value)


__all__ = ["REPORT_FILE", "ReportError", "ReportInputs", "gather", "write_report"]
