"""Finished trials logged to the experiment trackers teams already use: W&B and MLflow.

``submit --log-to wandb[:PROJECT]`` and ``--log-to mlflow:TRACKING_URI`` log one tracker run
per finished trial: its parameters (N, D, B in sequences and tokens, lr, schedule, seed,
shape), its curve (train loss and lr every step, validation loss where measured; step =
optimizer step, with tokens alongside), its final loss and how it ended. Runs are grouped
by sweep: W&B's ``group`` is the sweep's name, MLflow's experiment is named after it.
A failed trial is a failed tracker run (W&B exit code 1, MLflow status FAILED), so crashed
runs are counted where the team looks; a diverged one is finished, with status ``diverged``.

Logging runs on a background thread so the sweep never waits for a tracker; a tracker that
fails names the problem once on stderr and the sweep goes on. The packages are optional
extras (``pip install 'sweeper[wandb]'`` / ``'sweeper[mlflow]'``).
"""

from __future__ import annotations

import math
import queue
import sys
import threading
from typing import Any

from sweeper.errors import SweeperError
from sweeper.outcome import TrialOutcome
from sweeper.plan import TrialSpec


class TrackerError(SweeperError):
    """A --log-to destination that cannot be used (unknown kind, package not installed)."""


def trial_params(spec: TrialSpec) -> dict[str, Any]:
    return {
        "sweep": spec.sweep,
        "trial_id": spec.trial_id,
        "cell_id": spec.cell_id,
        "shape": spec.shape.name,
        "n_params": spec.shape.n_params_nonembedding,
        "tokens_budget": spec.tokens_budget,
        "lr": spec.lr,
        "batch_size": spec.batch_size,
        "batch_size_tokens": spec.batch_size_tokens,
        "seq_len": spec.shape.seq_len,
        "schedule": spec.schedule.kind,
        "seed": spec.seed,
    }


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


class Tracker:
    """One destination; ``log`` runs on the logging thread, one finished trial at a time."""

    def log(self, spec: TrialSpec, outcome: TrialOutcome) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush what is buffered (called once, after the last trial)."""


class WandbTracker(Tracker):
    def __init__(self, project: str, run_dir: str):
        try:
            import wandb
        except ImportError:
            raise TrackerError(
                "--log-to wandb needs the wandb package: pip install 'sweeper[wandb]'"
            ) from None
        self.wandb, self.project, self.dir = wandb, project, run_dir

    def log(self, spec: TrialSpec, outcome: TrialOutcome) -> None:
        run = self.wandb.init(
            project=self.project,
            group=spec.sweep,
            name=spec.label,
            dir=self.dir,
            config=trial_params(spec),
            job_type="trial",
            reinit="create_new",
        )
        for point in outcome.curve:
            row: dict[str, float] = {"train_loss": point.train_loss, "lr": point.lr, "tokens": point.tokens}
            if point.val_loss is not None and math.isfinite(point.val_loss):
                row["val_loss"] = point.val_loss
            run.log(row, step=point.step)
        run.summary.update(
            {
                "status": str(outcome.status),
                "loss": outcome.final_val_loss,
                "wall_seconds": outcome.wall_seconds,
                "error": outcome.error or "",
            }
        )
        run.finish(exit_code=1 if outcome.status == "failed" else 0)


class MlflowTracker(Tracker):
    BATCH = 1000  # MLflow's limit of metrics per log_batch call

    def __init__(self, tracking_uri: str):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise TrackerError(
                "--log-to mlflow needs the mlflow package: pip install 'sweeper[mlflow]'"
            ) from None
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiments: dict[str, str] = {}

    def _experiment(self, sweep: str) -> str:
        if sweep not in self.experiments:
            found = self.client.get_experiment_by_name(sweep)
            self.experiments[sweep] = found.experiment_id if found else self.client.create_experiment(sweep)
        return self.experiments[sweep]

    def log(self, spec: TrialSpec, outcome: TrialOutcome) -> None:
        from mlflow.entities import Metric, Param

        run = self.client.create_run(
            self._experiment(spec.sweep),
            run_name=spec.label,
            tags={"sweep": spec.sweep, "trial_id": spec.trial_id, "status": str(outcome.status)},
        )
        run_id = run.info.run_id
        stamp = int(outcome.ended_at * 1000)
        metrics = []
        for point in outcome.curve:
            if _finite(point.train_loss):
                metrics.append(Metric("train_loss", point.train_loss, stamp, point.step))
            metrics.append(Metric("lr", point.lr, stamp, point.step))
            if point.val_loss is not None and math.isfinite(point.val_loss):
                metrics.append(Metric("val_loss", point.val_loss, stamp, point.step))
        if _finite(outcome.final_val_loss):
            metrics.append(Metric("loss", outcome.final_val_loss, stamp, outcome.steps_done))
        params = [Param(key, str(value)) for key, value in trial_params(spec).items()]
        self.client.log_batch(run_id, params=params)
        for start in range(0, len(metrics), self.BATCH):
            self.client.log_batch(run_id, metrics=metrics[start : start + self.BATCH])
        if outcome.error:
            self.client.set_tag(run_id, "error", outcome.error[:5000])
        self.client.set_terminated(
            run_id, status="FAILED" if outcome.status == "failed" else "FINISHED", end_time=stamp
        )


def make_tracker(destination: str, run_dir: str) -> Tracker:
    """``wandb``, ``wandb:PROJECT`` or ``mlflow:TRACKING_URI`` -> a Tracker (TrackerError else)."""
    kind, _, rest = destination.partition(":")
    if kind == "wandb":
        return WandbTracker(rest or "sweeper", run_dir)
    if kind == "mlflow":
        if not rest:
            raise TrackerError(
                "--log-to mlflow needs a tracking URI: mlflow:http://HOST:5000 or mlflow:file:DIR"
            )
        return MlflowTracker(rest)
    raise TrackerError(f"--log-to {destination}: expected wandb[:PROJECT] or mlflow:TRACKING_URI")


class TrialLogger:
    """Hands finished trials to every tracker on one background thread."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers
        self._queue: queue.Queue = queue.Queue()
        self._broken: set[int] = set()
        self._thread = threading.Thread(target=self._work, name="sweeper-trackers", daemon=True)
        if trackers:
            self._thread.start()

    def __call__(self, spec: TrialSpec, outcome: TrialOutcome) -> None:
        if self.trackers:
            self._queue.put((spec, outcome))

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            for index, tracker in enumerate(self.trackers):
                if index in self._broken:
                    continue
                try:
                    tracker.log(*item)
                except Exception as error:  # noqa: BLE001 (a tracker must not stop the sweep)
                    self._broken.add(index)
                    print(
                        f"warning: {type(tracker).__name__} stopped logging: "
                        f"{type(error).__name__}: {str(error)[:200]}",
                        file=sys.stderr,
                    )

    def close(self) -> None:
        """Wait until every queued trial is logged, then let the trackers flush."""
        if not self.trackers:
            return
        self._queue.put(None)
        self._thread.join()
        for tracker in self.trackers:
            tracker.close()


__all__ = ["MlflowTracker", "Tracker", "TrackerError", "TrialLogger", "WandbTracker", "make_tracker"]
