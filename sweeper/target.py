"""The target-scale run: train the proxy family at the size the fit predicts for, and check it.

``run_target`` builds the proxy family's shape closest to the requested N, sets lr and batch
from the fit, and trains it on the cluster through the same executor and Parquet results as
a sweep (rows with status ``target``). With ``bracket=True`` it also trains the four axis
neighbours of the predicted point (lr x1/2, lr x2, B x1/2, B x2, at the predicted value of
the other) and reports the prediction's regret against the best of the five. Four axis
neighbours rather than the 3x3 grid: the regret needs to know whether either knob alone
would have done better, and at target scale each extra run is the most expensive of all
(5 runs instead of 9). With ``seeds`` > 1 every point trains once per seed (the recipe's
first seed and the next ones); a point's loss is the mean over its seeds, and the spread of
its seeds is printed beside it, so a regret can be read against the noise that blurs it.

The shape rule (``family_shape``): the template is the recipe's largest rung; n_layers,
n_heads, seq_len, vocab_size and mlp_ratio are kept, and d_model is the multiple of n_heads
(so every head keeps a whole head dimension) whose non-embedding count N is nearest to the
request in log space. The prediction is made for that shape's actual N (and its exact FLOPs
per token), not the requested N.

Trial ids: a target row's id is the hash of the proxy trial id it would have had plus the
role "target", so it never replaces a sweep's row if pointed at a sweep's folder, and
running the same target again re-uses rows already recorded (``target`` or ``diverged``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeper.errors import SweeperError
from sweeper.hparams import Prediction, load_hparams
from sweeper.outcome import TrialOutcome, TrialStatus
from sweeper.plan import Cell, TrialSpec, cell_id_for, make_trial, trial_identity
from sweeper.recipe import ModelShape, Recipe
from sweeper.runfolder import atomic_write_json
from sweeper.sweep import FixedOrder, run_trials

TARGET_SUMMARY_FILE = "target.json"


def family_shape(recipe: Recipe, n_params: float) -> ModelShape:
    """The proxy family's shape with N nearest to ``n_params`` (rule in the module doc)."""
    if not n_params > 0:
        raise SweeperError("--params must be positive")
    template = max(recipe.shapes, key=lambda shape: shape.n_params_nonembedding)

    def with_width(d_model: int) -> ModelShape:
        return template.model_copy(update={"d_model": d_model})

    step = template.n_heads
    # N grows as L * (4 + 2 * mlp_ratio) * d^2 to leading order: start there, then look
    # around, since the linear terms shift the best multiple at small widths.
    per_width2 = template.n_layers * (4 + 2 * template.mlp_ratio)
    guess = max(1, round(math.sqrt(n_params / per_width2) / step))
    candidates = [with_width(k * step) for k in range(max(1, guess - 3), guess + 4)]
    return min(candidates, key=lambda s: abs(math.log(s.n_params_nonembedding / n_params)))


@dataclass
class BracketPoint:
    """One run of the target: the predicted point or a neighbour of it."""

    label: str  # "predicted", "lr x1/2", "lr x2", "B x1/2", "B x2"
    lr: float
    batch_size: int  # sequences
    spec: TrialSpec
    outcome: TrialOutcome | None = None
    seed: int = 0

    @property
    def loss(self) -> float:
        if self.outcome is None or self.outcome.status not in (TrialStatus.TARGET, TrialStatus.COMPLETE):
            return float("nan")
        return self.outcome.final_val_loss


@dataclass
class BracketSetting:
    """One (lr, B) setting of the bracket and its runs, one per seed."""

    label: str
    lr: float
    batch_size: int
    runs: list[BracketPoint] = field(default_factory=list)

    @property
    def loss(self) -> float:
        """Mean loss over the seeds; nan unless every seed finished."""
        losses = [run.loss for run in self.runs]
        return sum(losses) / len(losses) if all(math.isfinite(x) for x in losses) else float("nan")

    @property
    def spread(self) -> float:
        """Max - min of the seeds' losses (nats); nan with fewer than two finished seeds."""
        losses = [run.loss for run in self.runs if math.isfinite(run.loss)]
        return max(losses) - min(losses) if len(losses) >= 2 else float("nan")


@dataclass
class TargetReport:
    """What ``run_target`` did: the shape, the prediction for it, and each point's result."""

    run_dir: Path
    requested_params: float
    shape: ModelShape
    tokens: int
    prediction: Prediction
    points: list[BracketPoint] = field(default_factory=list)
    wall_seconds: float = 0.0
    reused: int = 0  # points already recorded in the run folder, not run again

    def settings(self) -> list[BracketSetting]:
        """The bracket's (lr, B) settings in plan order, each with its runs (one per seed)."""
        by_label: dict[str, BracketSetting] = {}
        for point in self.points:
            setting = by_label.setdefault(
                point.label, BracketSetting(point.label, point.lr, point.batch_size)
            )
            setting.runs.append(point)
        return list(by_label.values())

    @property
    def predicted(self) -> BracketSetting:
        return self.settings()[0]

    @property
    def best(self) -> BracketSetting | None:
        finished = [s for s in self.settings() if math.isfinite(s.loss)]
        return min(finished, key=lambda s: s.loss) if finished else None

    @property
    def regret(self) -> float:
        """Predicted setting's loss minus the bracket's best (nats; 0 when it is the best)."""
        best = self.best
        return self.predicted.loss - best.loss if best is not None else float("nan")

    @property
    def seed_spread(self) -> float:
        """The largest max-min of one setting's seed losses (nats; nan with one seed)."""
        spreads = [s.spread for s in self.settings() if math.isfinite(s.spread)]
        return max(spreads) if spreads else float("nan")

    def table(self) -> str:
        """The regret table printed by ``sweeper target``."""
        best = self.best
        p = self.prediction
        interval = (
            "undetermined" if p.lr_interval is None else f"[{p.lr_interval[0]:.4g}, {p.lr_interval[1]:.4g}]"
        )
        seeds = max(len(s.runs) for s in self.settings())
        lines = [
            f"target {self.shape.name}: N={self.shape.n_params_nonembedding:,} (asked {self.requested_params:.4g})"
            f" D={self.tokens:,} seq_len={self.shape.seq_len}",
            f"predicted lr {p.lr:.4g} (95% {interval}),"
            f" batch {p.batch_size_sequences} sequences = {p.batch_size_sequences * self.shape.seq_len} tokens"
            f" (law: {p.batch_size_tokens:.0f}); extrapolation N x{p.extrapolation_n_params:.3g}"
            f" D x{p.extrapolation_tokens:.3g}",
            f"{'point':<10} {'lr':>10} {'B (seq)':>8} {'B (tok)':>8} {'status':>9} {'loss':>8}"
            f" {'seed spread':>11} {'vs best':>16}",
        ]
        for setting in self.settings():
            status = "/".join(sorted({r.outcome.status if r.outcome else "missing" for r in setting.runs}))
            if math.isfinite(setting.loss) and best is not None:
                gap = setting.loss - best.loss
                versus = f"{gap:+.4f} ({gap / best.loss:+.2%})"
                loss = f"{setting.loss:.4f}"
            else:
                versus, loss = "", "-"
            spread = f"{setting.spread:.4f}" if math.isfinite(setting.spread) else "-"
            lines.append(
                f"{setting.label:<10} {setting.lr:>10.4g} {setting.batch_size:>8d}"
                f" {setting.batch_size * self.shape.seq_len:>8d} {status:>9} {loss:>8}"
                f" {spread:>11} {versus:>16}"
            )
        if best is not None and math.isfinite(self.predicted.loss):
            per = f", mean of {seeds} seeds each" if seeds > 1 else ""
            lines.append(
                f"regret of the prediction: {self.regret:+.4f} nats ({self.regret / best.loss:+.2%})"
                f" against the best of the {len(self.settings())} settings ({best.label}{per})"
            )
            if math.isfinite(self.seed_spread):
                lines.append(
                    f"seed spread (largest max-min of one setting's {seeds} seeds):"
                    f" {self.seed_spread:.4f} nats ({self.seed_spread / best.loss:.2%})"
                )
        if p.loss is not None and math.isfinite(self.predicted.loss):
            lines.append(f"loss law predicted {p.loss:.4f}, measured {self.predicted.loss:.4f}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "requested_params": self.requested_params,
            "shape": self.shape.model_dump(),
            "n_params": self.shape.n_params_nonembedding,
            "tokens": self.tokens,
            "prediction": self.prediction.to_dict(),
            "points": [
                {
                    "label": p.label,
                    "lr": p.lr,
                    "batch_size": p.batch_size,
                    "seed": p.seed,
                    "trial_id": p.spec.trial_id,
                    "status": p.outcome.status if p.outcome else None,
                    "loss": p.loss if math.isfinite(p.loss) else None,
                }
                for p in self.points
            ],
            "settings": [
                {
                    "label": s.label,
                    "loss": s.loss if math.isfinite(s.loss) else None,
                    "seed_spread": s.spread if math.isfinite(s.spread) else None,
                }
                for s in self.settings()
            ],
            "regret": self.regret if math.isfinite(self.regret) else None,
            "seed_spread": self.seed_spread if math.isfinite(self.seed_spread) else None,
            "best": self.best.label if self.best else None,
        }


def _target_spec(
    recipe: Recipe, cell: Cell, lr: float, batch_size: int, identity: str, seed: int
) -> TrialSpec:
    spec = make_trial(recipe, cell, lr, batch_size, seed, identity)
    return spec.model_copy(
        update={"trial_id": trial_identity({"role": "target", "proxy_trial": spec.trial_id})}
    )


def target_seeds(recipe: Recipe, count: int) -> list[int]:
    """``count`` seeds: the recipe's first seed and the integers after it."""
    if count < 1:
        raise SweeperError("--seeds must be at least 1")
    return [recipe.seeds[0] + k for k in range(count)]


def plan_points(
    recipe: Recipe,
    shape: ModelShape,
    tokens: int,
    prediction: Prediction,
    identity: str,
    bracket: bool,
    seeds: list[int] | None = None,
) -> list[BracketPoint]:
    """The predicted point, then (with ``bracket``) its four axis neighbours, duplicates dropped
    (B x1/2 of a one-sequence batch is the batch itself); each once per seed (default: the
    recipe's first)."""
    seeds = seeds or [recipe.seeds[0]]
    cell = Cell(f"target-{cell_id_for(shape, tokens)}", shape, tokens)
    lr, batch = prediction.lr, prediction.batch_size_sequences
    wanted = [("predicted", lr, batch)]
    if bracket:
        wanted += [
            ("lr x1/2", lr / 2, batch),
            ("lr x2", lr * 2, batch),
            ("B x1/2", lr, max(1, round(batch / 2))),
            ("B x2", lr, batch * 2),
        ]
    points, seen = [], set()
    for label, point_lr, point_batch in wanted:
        if (point_lr, point_batch) in seen:
            continue
        seen.add((point_lr, point_batch))
        points += [
            BracketPoint(
                label,
                point_lr,
                point_batch,
                _target_spec(recipe, cell, point_lr, point_batch, identity, seed),
                seed=seed,
            )
            for seed in seeds
        ]
    return points


def _unix(moment) -> float:  # noqa: ANN001 (a datetime from a timestamp column, or None)
    return moment.timestamp() if moment is not None else float("nan")


def _recorded(run_dir: Path) -> dict[str, TrialOutcome]:
    """Target rows already in ``run_dir`` (status target or diverged), as outcomes."""
    from sweeper.results import read_trials

    if not (run_dir / "trials").is_dir():
        return {}
    outcomes = {}
    for row in read_trials(run_dir).table.to_pylist():
        if row["status"] in (TrialStatus.TARGET, TrialStatus.DIVERGED):
            outcomes[row["trial_id"]] = TrialOutcome(
                trial_id=row["trial_id"],
                status=row["status"],
                final_val_loss=row["loss"],
                smoothed_train_loss=row["smoothed_train_loss"],
                steps_done=row["steps"],
                tokens_done=row["tokens"],
                wall_seconds=row["wall_seconds"],
                started_at=_unix(row["started_at"]),
                ended_at=_unix(row["ended_at"]),
                diverged_step=row["diverged_step"],
                node_id=row["node_id"] or "",
            )
    return outcomes


def run_target(
    recipe: Recipe,
    fit_json: str | Path,
    n_params: float,
    tokens: float,
    run_dir: str | Path,
    *,
    bracket: bool = False,
    seeds: int = 1,
    address: str | None = None,
    num_cpus: int | None = None,
    on_point: Callable[[BracketPoint], None] | None = None,
) -> TargetReport:
    """Train the target (and its bracket) and record each run in ``run_dir``, through the
    sweep driver's loop (sweep.run_trials: its lock, cluster, results and progress file).

    Completed runs are written with status ``target`` (diverged and failed keep theirs).
    Raises SweeperError on bad input or a busy folder; training failures are rows, not errors.
    """
    from sweeper.train import data_identity  # torch: only once the input is known to be good

    hp = load_hparams(fit_json)
    if not tokens >= 1:
        raise SweeperError("--tokens must be at least 1")
    shape = family_shape(recipe, n_params)
    budget = int(round(tokens))
    prediction = hp.predict(
        shape.n_params_nonembedding, budget, shape.seq_len, flops_per_token=shape.flops_per_token_nonembedding
    )
    points = plan_points(
        recipe, shape, budget, prediction, data_identity(recipe.data), bracket, target_seeds(recipe, seeds)
    )
    report = TargetReport(Path(run_dir), float(n_params), shape, budget, prediction, points)
    by_id = {p.spec.trial_id: p for p in points}

    def reuse_recorded(planned: int, pending: int, dashboard_url: str | None) -> None:
        # Called under the run folder's lock, before anything trains.
        for trial_id, outcome in _recorded(report.run_dir).items():
            point = by_id.get(trial_id)
            if point is not None:
                point.outcome = outcome
                report.reused += 1
                if on_point is not None:
                    on_point(point)

    def finished(spec: TrialSpec, outcome: TrialOutcome, counts: object) -> None:
        point = by_id[spec.trial_id]
        point.outcome = outcome
        if on_point is not None:
            on_point(point)

    # One point per task: fusing learning rates would tie the bracket's points to one
    # process, and they are few.
    summary = run_trials(
        recipe,
        report.run_dir,
        [p.spec for p in points],
        lambda recorded: FixedOrder(p.spec for p in points),
        address=address,
        num_cpus=num_cpus,
        complete_as=TrialStatus.TARGET,
        on_start=reuse_recorded,
        on_trial=finished,
    )
    report.wall_seconds = summary.wall_seconds
    atomic_write_json(
        report.run_dir / TARGET_SUMMARY_FILE,
        {"fit": str(Path(fit_json)), "recipe": recipe.name, **report.to_dict()},
    )
    return report


__all__ = [
    "BracketPoint",
    "BracketSetting",
    "TargetReport",
    "family_shape",
    "plan_points",
    "run_target",
    "target_seeds",
]
