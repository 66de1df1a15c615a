"""Sweep progress as Ray metrics (ray.util.metrics), for the dashboard's metrics view.

The driver owns these gauges and sets them once per scheduling round. Ray's metrics agent
on the driver's node exports them on its Prometheus endpoint (with Ray's ``ray_`` prefix),
so with Prometheus and Grafana set up (cluster/README.md) they appear next to Ray's own
metrics:

- ``ray_sweeper_trials{sweep, status}``: trials by state: pending (planned, not yet
  started), running, complete, diverged, failed (this driver's session), recorded (already
  in the run folder when the driver started).
- ``ray_sweeper_best_loss{sweep, cell}``: lowest held-out loss of a complete trial per cell.
- ``ray_sweeper_trials_finished_total{sweep, status}``: a counter, for rates.

Contract: nothing here ever raises into the driver; a cluster without a metrics agent
(minimal Ray) simply exports nothing.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Any

from sweeper.outcome import TrialStatus

logger = logging.getLogger(__name__)

#: Gauge statuses, in the order a dashboard panel lists them.
PROGRESS_STATUSES = ("pending", "running", "complete", "diverged", "failed", "recorded")


class SweepMetrics:
    """The gauges of one sweep, tagged with its name so sweeps on one cluster stay apart."""

    def __init__(self, sweep: str):
        self.sweep = sweep
        self.best_loss: dict[str, float] = {}
        self._trials: Any = None  # Ray's Gauge and Counter, when Ray's metrics load
        self._best: Any = None
        self._finished: Any = None
        try:
            from ray.util.metrics import Counter as RayCounter
            from ray.util.metrics import Gauge

            self._trials = Gauge(
                "sweeper_trials", description="Trials of a sweep by state.", tag_keys=("sweep", "status")
            )
            self._best = Gauge(
                "sweeper_best_loss",
                description="Lowest held-out loss (nats/token) of a complete trial, per cell.",
                tag_keys=("sweep", "cell"),
            )
            self._finished = RayCounter(
                "sweeper_trials_finished",
                description="Trials finished by this driver, by status.",
                tag_keys=("sweep", "status"),
            )
        except Exception as error:  # noqa: BLE001 (metrics are optional)
            logger.debug("sweeper metrics disabled: %s", error)
            self._trials = self._best = self._finished = None

    @property
    def enabled(self) -> bool:
        return self._trials is not None

    def progress(self, *, pending: int, running: int, counts: Counter, recorded: int = 0) -> None:
        """Set the trial gauges: ``counts`` holds this session's finished trials by status."""
        if not self.enabled:
            return
        values = {
            "pending": pending,
            "running": running,
            **{
                status.value: counts.get(status, 0)
                for status in (TrialStatus.COMPLETE, TrialStatus.DIVERGED, TrialStatus.FAILED)
            },
            "recorded": recorded,
        }
        try:
            for status, value in values.items():
                self._trials.set(float(value), tags={"sweep": self.sweep, "status": status})
        except Exception as error:  # noqa: BLE001
            logger.debug("sweeper metrics: %s", error)

    def finished(self, cell_id: str, status: str, loss: float) -> None:
        """Count one finished trial; lower the cell's best loss when it beats it."""
        if not self.enabled:
            return
        try:
            self._finished.inc(1.0, tags={"sweep": self.sweep, "status": status})
            if (
                status == TrialStatus.COMPLETE
                and math.isfinite(loss)
                and loss < self.best_loss.get(cell_id, math.inf)
            ):
                self.best_loss[cell_id] = loss
                self._best.set(loss, tags={"sweep": self.sweep, "cell": cell_id})
        except Exception as error:  # noqa: BLE001
            logger.debug("sweeper metrics: %s", error)
