"""Execute: run trial specs as Ray tasks and hand their outcomes back to the driver.

"How a trial runs" (resources, retries, where) lives here, apart from "what runs next"
(schedule/). Outcomes come back through Ray's object store, never a shared filesystem, so
the same code serves a laptop and a multi-node cluster.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import ray
from ray.exceptions import RayError, TaskCancelledError

from sweeper.outcome import TrialOutcome
from sweeper.plan import TrialSpec
from sweeper.recipe import Resources


@dataclass
class ClusterInfo:
    address: str
    dashboard_url: str | None
    started_here: bool  # True when this process started an embedded local cluster


def connect(address: str | None = None, num_cpus: int | None = None) -> ClusterInfo:
    """Attach to ``address`` (or RAY_ADDRESS), else start an embedded local Ray.

    The local cluster binds to 127.0.0.1 and so does its dashboard: nothing is reachable
    from other machines unless the user starts Ray differently.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        context = ray.get_runtime_context()
        return ClusterInfo(context.gcs_address, _dashboard_url(), started_here=False)
    if address:
        context = ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        started_here = False
    else:
        context = ray.init(
            num_cpus=num_cpus,
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            logging_level="ERROR",
        )
        started_here = True
    url = context.dashboard_url
    return ClusterInfo(
        context.address_info.get("gcs_address", address or ""),
        f"http://{url}" if url and not url.startswith("http") else url,
        started_here,
    )


def _dashboard_url() -> str | None:
    try:
        url = ray.get_runtime_context().dashboard_url  # type: ignore[attr-defined]
    except AttributeError:
        from ray._private.worker import global_worker

        url = getattr(global_worker.node, "address_info", {}).get("webui_url")
    if url and not url.startswith("http"):
        url = f"http://{url}"
    return url


def disconnect() -> None:
    if ray.is_initialized():
        ray.shutdown()


@ray.remote
def _run_trial_task(spec: TrialSpec, threads: int) -> TrialOutcome:
    # Imported inside the task so the driver never pays for torch when it only schedules.
    from sweeper.train import load_corpus, run_trial

    node_id = ray.get_runtime_context().get_node_id()
    corpus = load_corpus(spec.data)
    if corpus.identity != spec.data_identity:
        now = time.time()
        return TrialOutcome(
            trial_id=spec.trial_id,
            status="failed",
            final_val_loss=float("nan"),
            smoothed_train_loss=float("nan"),
            steps_done=0,
            tokens_done=0,
            wall_seconds=0.0,
            started_at=now,
            ended_at=now,
            error=(
                f"DataMismatch: this node's data hashes to {corpus.identity}, the plan's to "
                f"{spec.data_identity}; every node must see the same data"
            ),
            node_id=node_id,
        )
    outcome = run_trial(spec, threads=threads)
    outcome.node_id = node_id
    return outcome


class TrialExecutor:
    """Keeps trials in flight on the cluster and collects their outcomes.

    A trial whose worker process dies is retried by Ray (``max_retries``); an exception
    inside training is already an outcome with status ``failed`` (the trainer never
    raises), so only infrastructure failures reach ``_failed_outcome``.
    """

    def __init__(self, resources: Resources):
        self.resources = resources
        self.in_flight: dict[ray.ObjectRef, TrialSpec] = {}

    def capacity(self) -> int:
        """How many trials the cluster can run at once now (re-read: clusters scale)."""
        available = ray.cluster_resources()
        slots = math.floor(available.get("CPU", 0) / self.resources.cpus + 1e-9)
        if self.resources.gpus > 0:
            slots = min(slots, math.floor(available.get("GPU", 0) / self.resources.gpus + 1e-9))
        return max(1, slots)

    def submit(self, spec: TrialSpec) -> None:
        task = _run_trial_task.options(
            name=f"trial {spec.label}",
            num_cpus=self.resources.cpus,
            num_gpus=self.resources.gpus,
            max_retries=self.resources.max_retries,
            retry_exceptions=False,
        )
        threads = max(1, math.ceil(self.resources.cpus))
        self.in_flight[task.remote(spec, threads)] = spec

    def running_ids(self) -> set[str]:
        return {spec.trial_id for spec in self.in_flight.values()}

    def wait(self, timeout: float | None = None) -> list[tuple[TrialSpec, TrialOutcome]]:
        """Block until at least one trial ends (or ``timeout``); return those that ended."""
        if not self.in_flight:
            return []
        ready, _ = ray.wait(list(self.in_flight), num_returns=1, timeout=timeout)
        finished = []
        for ref in ready:
            spec = self.in_flight.pop(ref)
            try:
                outcome = ray.get(ref)
            except (RayError, TaskCancelledError) as error:
                outcome = _failed_outcome(spec, error)
            finished.append((spec, outcome))
        return finished


def _failed_outcome(spec: TrialSpec, error: Exception) -> TrialOutcome:
    now = time.time()
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return TrialOutcome(
        trial_id=spec.trial_id,
        status="failed",
        final_val_loss=float("nan"),
        smoothed_train_loss=float("nan"),
        steps_done=0,
        tokens_done=0,
        wall_seconds=0.0,
        started_at=now,
        ended_at=now,
        error=f"{type(error).__name__}: {message}"[:2000],
    )
