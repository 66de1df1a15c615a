"""Replay: answer a sweep's trials from a recorded table instead of training them.

The executor here has the Ray executor's interface (submit, wait, capacity, in flight), so a
replayed sweep goes through the same driver, study and result sink as a real one and only
"how a trial runs" differs: a trial's outcome is the recorded run at its grid point. A
sampler's efficiency is then measured in seconds on real tables (``sweeper replay``).

A table is a run folder or a CSV that ``sweeper import steplaw`` reads. Without a recipe the
ladder is the table's own: its cells (N, D, seq_len, as the fitter groups them) and the lr
and batch values recorded in each (grid values written with different rounding are one
value, as in the fitter). Only recorded points can be answered; a proposal the table lacks
fails with a message saying so, and is counted.
"""

from __future__ import annotations

import hashlib
import math
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sweeper.errors import SweeperError
from sweeper.outcome import TrialOutcome, TrialStatus
from sweeper.plan import TrialSpec, plan_trials, trial_identity
from sweeper.recipe import (
    DataSource,
    Evaluation,
    ModelShape,
    Optimizer,
    Recipe,
    Schedule,
    Search,
    parse_recipe,
)

NOT_RECORDED = "NotRecorded: the replayed table has no run at this grid point"
SNAP_TOLERANCE = 5e-3  # the fitter's: grid values within 0.5% are one value


class ReplayError(SweeperError):
    """A table that cannot be replayed (missing, empty, unreadable)."""


@dataclass
class ReplayPlan:
    """What a replay runs: the trial specs (the sampler's space), the recorded answer of each
    spec that has one (trial id -> table row), how many grid points the table records, and
    the full grid's runs (the adaptive budget's base: the table's, or the recipe's grid)."""

    name: str
    specs: list[TrialSpec]
    answers: dict[str, dict[str, Any]]
    recorded_points: int
    grid_runs: int
    cell_sizes: dict[str, float] = field(default_factory=dict)  # the table's N per cell


def read_table_rows(table: str | Path, size_column: str = "N") -> list[dict[str, Any]]:
    """The trials rows of a run folder, or of a Step Law CSV (imported to a scratch folder
    by the importer, so the two readings are one)."""
    from sweeper.importers import ImportError_, import_steplaw
    from sweeper.results import read_trials

    path = Path(table)
    if path.is_dir():
        rows = read_trials(path).table.to_pylist()
    elif path.is_file():
        with tempfile.TemporaryDirectory() as scratch:
            try:
                import_steplaw(path, scratch, size_column=size_column)
            except ImportError_ as error:
                raise ReplayError(str(error)) from None
            rows = read_trials(Path(scratch)).table.to_pylist()
    else:
        raise ReplayError(f"table not found: {path} (a run folder or a Step Law CSV)")
    rows = [row for row in rows if row.get("status") in (TrialStatus.COMPLETE, TrialStatus.DIVERGED)]
    if not rows:
        raise ReplayError(f"{path}: no complete or diverged runs to replay")
    return rows


def _snap(values: list[float]) -> dict[float, float]:
    from sweeper.fit.select import snap_grid_values  # the fitter's one rule for rounding

    snapped, _ = snap_grid_values(np.asarray(values, dtype=float), SNAP_TOLERANCE)
    return dict(zip(values, snapped.tolist()))


def _answer(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One grid point's recorded answer: the mean finite loss of its complete runs."""
    losses = [
        r["loss"]
        for r in rows
        if r["status"] == TrialStatus.COMPLETE and r["loss"] is not None and math.isfinite(r["loss"])
    ]
    answer = dict(rows[0])
    answer["status"] = TrialStatus.COMPLETE.value if losses else TrialStatus.DIVERGED.value
    answer["loss"] = float(np.mean(losses)) if losses else float("nan")
    return answer


def _shape(row: dict[str, Any]) -> ModelShape:
    d_model, n_layers, n_heads = row.get("d_model"), row.get("n_layers"), row.get("n_heads")
    vocab = row.get("vocab_size") or 256
    if d_model and n_layers and n_heads and d_model % n_heads == 0:
        return ModelShape(
            d_model=d_model, n_layers=n_layers, n_heads=n_heads, seq_len=row["seq_len"], vocab_size=vocab
        )
    # A table without a shape: a placeholder; the row keeps the table's own N (see sink).
    return ModelShape(d_model=1, n_layers=1, n_heads=1, seq_len=row["seq_len"], vocab_size=vocab)


def table_plan(rows: list[dict[str, Any]], name: str, search: Search) -> ReplayPlan:
    """The table's own ladder. An adaptive search may propose any lr x batch pair of a cell's
    recorded values; a grid replays exactly the recorded points."""
    identity = hashlib.sha256(repr(sorted(r["trial_id"] for r in rows)).encode()).hexdigest()[:16]
    cells: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        cells.setdefault((row["n_params"], row["tokens_budget"], row["seq_len"]), []).append(row)
    specs, answers, recorded, sizes = [], {}, 0, {}
    schedule = Schedule()
    for (n_params, tokens, seq_len), members in sorted(cells.items()):
        lr_of = _snap([r["lr"] for r in members])
        points: dict[tuple, list[dict[str, Any]]] = {}
        for row in members:
            points.setdefault((lr_of[row["lr"]], row["batch_size"], row.get("seed") or 0), []).append(row)
        recorded += len(points)
        cell_id = members[0]["cell_id"] or f"N{n_params:.4g}-D{tokens:.3g}-S{seq_len}"
        sizes[cell_id] = float(n_params)
        if search.kind == "adaptive":
            grid = [
                (lr, b, s)
                for lr in sorted({k[0] for k in points})
                for b in sorted({k[1] for k in points})
                for s in sorted({k[2] for k in points})
            ]
        else:
            grid = sorted(points)
        shape = _shape(members[0])
        for lr, batch_size, seed in grid:
            trial_id = trial_identity(
                {"replay": identity, "cell": cell_id, "lr": lr, "batch_size": batch_size, "seed": seed}
            )
            specs.append(
                TrialSpec(
                    trial_id=trial_id,
                    sweep=name,
                    cell_id=cell_id,
                    shape=shape,
                    tokens_budget=tokens,
                    lr=lr,
                    batch_size=batch_size,
                    steps=max(1, round(tokens / (batch_size * seq_len))),
                    schedule=schedule,
                    optimizer=Optimizer(),
                    seed=seed,
                    data=DataSource(),
                    data_identity=f"replay-{identity}",
                    evaluation=Evaluation(),
                )
            )
            found = points.get((lr, batch_size, seed))
            answers[trial_id] = _answer(found) if found else _answer_missing(members[0])
    return ReplayPlan(name, specs, answers, recorded, recorded, sizes)


def _answer_missing(cell_row: dict[str, Any]) -> dict[str, Any]:
    # The cell's columns (its N, its schedule) with no result: the executor fails the trial.
    return {**cell_row, "status": TrialStatus.FAILED.value, "loss": float("nan"), "missing": True}


def recipe_plan(rows: list[dict[str, Any]], recipe: Recipe) -> ReplayPlan:
    """The recipe's ladder, answered from the table: a spec's answer is the recorded run of the
    same N, D, seq_len and batch size (sequences) whose lr is within 0.5%."""
    from sweeper.train import data_identity

    specs = plan_trials(recipe, data_identity(recipe.data))
    by_cell: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        by_cell.setdefault((row["n_params"], row["tokens_budget"], row["seq_len"]), []).append(row)
    answers = {}
    for spec in specs:
        candidates = by_cell.get((spec.n_params, spec.tokens_budget, spec.shape.seq_len), [])
        matches = [
            r
            for r in candidates
            if r["batch_size"] == spec.batch_size
            and abs(r["lr"] / spec.lr - 1.0) <= SNAP_TOLERANCE
            and (r.get("seed") or 0) == spec.seed
        ]
        if matches:
            answers[spec.trial_id] = _answer(matches)
        else:
            answers[spec.trial_id] = {
                "status": TrialStatus.FAILED.value,
                "loss": float("nan"),
                "missing": True,
            }
    recorded = sum(1 for answer in answers.values() if not answer.get("missing"))
    return ReplayPlan(recipe.name, specs, answers, recorded, len(specs))


@dataclass
class ReplayExecutor:
    """Answers submitted trials from recorded rows, oldest task first (so a replay is
    deterministic). ``capacity`` tasks are "in flight" at once, as on a cluster of that size."""

    answers: dict[str, dict[str, Any]]
    slots: int = 8
    in_flight: dict[int, list[TrialSpec]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # labels of proposals the table lacks
    _submitted: int = 0

    def capacity(self) -> int:
        return self.slots

    def submit(self, specs: list[TrialSpec]) -> None:
        self.in_flight[self._submitted] = list(specs)
        self._submitted += 1

    def in_flight_trials(self) -> list[TrialSpec]:
        return [spec for group in self.in_flight.values() for spec in group]

    def running_ids(self) -> set[str]:
        return {spec.trial_id for spec in self.in_flight_trials()}

    def where(self) -> dict[str, dict]:
        return {}

    def live(self) -> dict[str, dict]:
        return {}

    def wait(self, timeout: float | None = None) -> list[tuple[TrialSpec, TrialOutcome]]:
        if not self.in_flight:
            return []
        specs = self.in_flight.pop(min(self.in_flight))
        return [(spec, self._outcome(spec)) for spec in specs]

    def _outcome(self, spec: TrialSpec) -> TrialOutcome:
        answer = self.answers.get(spec.trial_id) or {"status": TrialStatus.FAILED.value, "missing": True}
        now = time.time()
        error = None
        if answer.get("missing"):
            self.missing.append(spec.label)
            error = NOT_RECORDED
        loss = answer.get("loss")
        return TrialOutcome(
            trial_id=spec.trial_id,
            status=answer["status"],
            final_val_loss=float("nan") if loss is None else float(loss),
            smoothed_train_loss=float(answer.get("smoothed_train_loss") or float("nan")),
            steps_done=int(answer.get("steps") or 0),
            tokens_done=int(answer.get("tokens") or 0),
            wall_seconds=0.0,
            started_at=now,
            ended_at=now,
            error=error,
            node_id="replay",
            recorded={k: v for k, v in answer.items() if k != "missing"},
        )


def sweep_name(table: str | Path) -> str:
    """A valid sweep name from the table's file or folder name."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "-", Path(table).stem or "replay").lstrip("-_.")
    return f"replay-{stem or 'table'}"


def table_recipe(name: str, search: Search) -> Recipe:
    """The recipe a table replay runs under: only its name, search and policies matter (the
    plan comes from the table); fusion is off, since nothing trains."""
    return parse_recipe(
        {
            "name": name,
            "models": [{"d_model": 8, "n_layers": 1, "n_heads": 1}],
            "tokens": {"absolute": [1]},
            "learning_rates": {"values": [1e-3]},
            "batch_sizes": [1],
            "fuse": "off",
            "search": search.model_dump(),
        }
    )
