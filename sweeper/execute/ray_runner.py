"""Execute: run trial specs as Ray tasks and hand their outcomes back to the driver.

"How a trial runs" (resources, retries, where) lives here, apart from "what runs next"
(schedule/). Outcomes come back through Ray's object store, never a shared filesystem, so
the same code serves a laptop and a multi-node cluster.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psutil
import ray
from ray.exceptions import RayError, TaskCancelledError

from sweeper.errors import SweeperError
from sweeper.execute.live import LiveProgress, reporter
from sweeper.execute.watchdog import declare_roots, start_watchdog, stop_watchdog
from sweeper.outcome import TrialOutcome, TrialStatus
from sweeper.plan import TrialSpec, task_name
from sweeper.recipe import Resources


@dataclass
class ClusterInfo:
    address: str
    dashboard_url: str | None
    started_here: bool  # True when this process started an embedded local cluster


# Workers import torch and build a first optimizer as they start (seconds, once per worker
# process), not inside the first trial each one runs.
WORKER_ENV = {"worker_process_setup_hook": "sweeper.train.loop.warm_up"}


def connect(address: str | None = None, num_cpus: int | None = None) -> ClusterInfo:
    """Attach to ``address`` (or RAY_ADDRESS), else start an embedded local Ray.

    The local cluster listens on the loopback only: its dashboard (and with it the Jobs
    API) and, through ``_loopback_node``, every other server of the node (GCS, raylet,
    object manager, the dashboard and runtime-env agents, workers). A watchdog stops every
    process of that cluster if this process dies without ``disconnect``.
    """
    global _watchdog
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        return ClusterInfo(ray.get_runtime_context().gcs_address, _dashboard_url(), started_here=False)
    if address:
        context = ray.init(
            address=address, runtime_env=WORKER_ENV, log_to_driver=False, logging_level=logging.ERROR
        )
        started_here = False
    else:
        # What ray.init starts (GCS, raylet, dashboard...) is stopped with all its children
        # if this driver dies, during the start-up too (execute/watchdog.py).
        before = _children()
        _watchdog = start_watchdog(before)
        try:
            with _loopback_node():
                context = ray.init(
                    num_cpus=num_cpus,
                    include_dashboard=True,
                    runtime_env=WORKER_ENV,
                    dashboard_host="127.0.0.1",
                    log_to_driver=False,
                    logging_level=logging.ERROR,
                )
        except BaseException:
            disconnect()
            raise
        declare_roots(_watchdog, sorted(_children() - before - {_watchdog.pid}))
        started_here = True
    url = context.dashboard_url
    return ClusterInfo(
        # ray.init returns a RayContext; its annotation names only the BaseContext base class.
        context.address_info.get("gcs_address", address or ""),  # type: ignore[attr-defined]
        f"http://{url}" if url and not url.startswith("http") else url,
        started_here,
    )


@contextlib.contextmanager
def _loopback_node() -> Iterator[None]:
    """While a local cluster starts, make Ray take 127.0.0.1 as this node's address.

    Ray binds its servers to the node's address, and resolves a loopback address given as
    ``_node_ip_address`` back to the machine's external one, except in its single-machine
    mode (its default on macOS and Windows), whose switch this sets: the module constant
    for this process, the environment variable for the processes the start spawns. Both are
    restored afterwards, so a later attach to a remote cluster from this process advertises
    a reachable address.
    """
    from ray._private import ray_constants

    variable = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    saved_env, saved_flag = os.environ.get(variable), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[variable] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = saved_env


def _dashboard_url() -> str | None:
    try:
        url = ray.get_runtime_context().dashboard_url  # type: ignore[attr-defined]
    except AttributeError:
        from ray._private.worker import global_worker

        url = getattr(global_worker.node, "address_info", {}).get("webui_url")
    if url and not url.startswith("http"):
        url = f"http://{url}"
    return url


def _children() -> set[int]:
    return {child.pid for child in psutil.Process().children()}


# The watchdog of the local cluster this process started, while it runs.
_watchdog: subprocess.Popen[bytes] | None = None


def disconnect() -> None:
    global _watchdog
    if ray.is_initialized():
        ray.shutdown()
    if _watchdog is not None:
        stop_watchdog(_watchdog)  # it stops whatever of the cluster outlived the shutdown
        _watchdog = None


@ray.remote
def _run_trial_task(spec: TrialSpec, threads: int, board=None) -> TrialOutcome:  # noqa: ANN001
    # Imported inside the task so the driver never pays for torch when it only schedules.
    from sweeper.train import load_corpus, run_trial

    node_id = ray.get_runtime_context().get_node_id()
    corpus = load_corpus(spec.data)
    if corpus.identity != spec.data_identity:
        return failed_outcome(
            spec,
            f"DataMismatch: this node's data hashes to {corpus.identity}, the plan's to "
            f"{spec.data_identity}; every node must see the same data",
            node_id,
        )
    outcome = run_trial(spec, threads=threads, report=reporter(board))
    outcome.node_id = node_id
    return outcome


class PlacementError(SweeperError):
    """The recipe asks per trial for more than any node of the cluster can ever offer.

    Raised before anything is submitted: Ray would otherwise leave such tasks pending
    forever (an infeasible task only logs a warning). The message is one line for the user.
    """


def node_shapes() -> list[dict[str, float]]:
    """Total resources of every node the cluster has or may add.

    Alive nodes from the GCS, plus the node types of an autoscaling cluster (a GPU worker
    group that scales from zero has no node yet but will get one on demand). The autoscaler's
    config is read through a private accessor; when it is missing, only alive nodes count.
    """
    shapes = [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
        for group in config.node_group_configs if config is not None else []:
            if group.max_count != 0:
                shapes.append({key: float(value) for key, value in group.resources.items()})
    except Exception:  # noqa: BLE001 (private API; absence only narrows the check)
        pass
    return shapes


def check_fits(resources: Resources, shapes: list[dict[str, float]] | None = None) -> None:
    """Raise PlacementError unless some node shape holds one trial's CPUs and GPUs."""
    shapes = node_shapes() if shapes is None else shapes
    wanted = {"CPU": resources.cpus, "GPU": resources.gpus}
    for shape in shapes:
        if all(shape.get(key, 0.0) + 1e-9 >= amount for key, amount in wanted.items() if amount > 0):
            return
    largest = (
        ", ".join(f"{shape.get('CPU', 0):g} CPU/{shape.get('GPU', 0):g} GPU" for shape in shapes)
        or "no nodes"
    )
    raise PlacementError(
        f"no node can ever run a trial: the recipe asks {resources.cpus:g} CPU and "
        f"{resources.gpus:g} GPU per trial (resources:), the cluster's nodes offer {largest}"
    )


#: Ray task states (ray.util.state) that mean "waiting for a node with room", in words.
_WAITING_STATES = {"PENDING_NODE_ASSIGNMENT": "pending for resources"}


@ray.remote
def _run_group_task(specs: list[TrialSpec], threads: int, board=None) -> list[TrialOutcome]:  # noqa: ANN001
    from sweeper.train import load_corpus
    from sweeper.train.branching import run_branched

    node_id = ray.get_runtime_context().get_node_id()
    if load_corpus(specs[0].data).identity != specs[0].data_identity:
        # Same check and message as a single trial: run one to get its failed outcome.
        return [ray.get(_run_trial_task.remote(spec, threads)) for spec in specs]
    outcomes = run_branched(specs, threads=threads, report=reporter(board))  # WSD budgets forked from one run
    for outcome in outcomes:
        outcome.node_id = node_id
    return outcomes


# How often `status`'s placements are refreshed: each second at most, at least every
# WHERE_LONGEST_S, and otherwise no more than a fifth of the time. An answer walks the job's
# task events in the dashboard's state head, so its cost grows through a sweep: asked each
# second (actor calls included), that process took a third of a core through the demo
# sweep, which the trials then lacked.
WHERE_EVERY_S = 1.0
WHERE_LONGEST_S = 5.0
WHERE_DUTY = 5.0


class TrialExecutor:
    """Keeps trials in flight on the cluster and collects their outcomes.

    A task runs one trial, or a fused group of trials that differ only in learning rate or
    token budget (one model with K stacked members, train/fused.py; WSD budgets of one run
    fork from its longest, train/branching.py). A task whose worker process dies
    is retried by Ray (``max_retries``); an exception inside training is already an
    outcome with status ``failed`` (the trainer never raises), so only infrastructure
    failures reach ``failed_outcome``.
    """

    def __init__(self, resources: Resources, dashboard_url: str | None = None):
        check_fits(resources)  # refuse at once what no node can ever hold
        self.resources = resources
        self.dashboard_url = dashboard_url  # where Ray's state API answers (for where())
        self.in_flight: dict[ray.ObjectRef, list[TrialSpec]] = {}
        self._where: tuple[float, dict[str, dict]] = (0.0, {})
        self._where_busy = threading.Event()
        self._capacity: tuple[float, int] = (-1.0, 1)
        self.live_progress = LiveProgress()

    def capacity(self) -> int:
        """How many tasks the cluster can run at once now (re-read each second: clusters
        scale, and asking the cluster on every round of the driver would slow it)."""
        asked_at, slots = self._capacity
        if time.monotonic() - asked_at < 1.0:
            return slots
        available = ray.cluster_resources()
        slots = math.floor(available.get("CPU", 0) / self.resources.cpus + 1e-9)
        if self.resources.gpus > 0:
            slots = min(slots, math.floor(available.get("GPU", 0) / self.resources.gpus + 1e-9))
        self._capacity = (time.monotonic(), max(1, slots))
        return max(1, slots)

    def _options(self, name: str) -> dict:
        options = {
            "name": name,
            "num_cpus": self.resources.cpus,
            "num_gpus": self.resources.gpus,
            "max_retries": self.resources.max_retries,
            "retry_exceptions": False,
        }
        if self.resources.memory_gb:
            options["memory"] = int(self.resources.memory_gb * 2**30)
        return options

    def submit(self, specs: list[TrialSpec]) -> None:
        """Run ``specs`` as one task: a single trial, or a fused group."""
        threads = max(1, math.ceil(self.resources.cpus))
        options = self._options(task_name(specs))
        board = self.live_progress.handle()
        ref: ray.ObjectRef[Any]
        if len(specs) == 1:
            ref = _run_trial_task.options(**options).remote(specs[0], threads, board)
        else:
            ref = _run_group_task.options(**options).remote(specs, threads, board)
        self.in_flight[ref] = list(specs)

    def in_flight_trials(self) -> list[TrialSpec]:
        return [spec for group in self.in_flight.values() for spec in group]

    def running_ids(self) -> set[str]:
        return {spec.trial_id for spec in self.in_flight_trials()}

    def live(self) -> dict[str, dict]:
        """Trial id -> the latest progress point (step, steps, train_loss, val_loss,
        elapsed_s) of the trials in flight that have reported one (execute/live.py)."""
        return self.live_progress.read(sorted(self.running_ids()))

    def where(self) -> dict[str, dict]:
        """Trial id -> {"state", "node_id", "node_ip"} of the trials in flight, from Ray's
        state API (one call for all tasks, spaced as the WHERE_ constants say). Never
        waits: the call runs on a background thread and this returns the latest answer (empty
        until the first).
        It only feeds ``sweeper status``, so it must never hold the sweep up."""
        if not self.in_flight or self.dashboard_url is None:
            return {}
        next_at, cached = self._where
        if time.monotonic() >= next_at and not self._where_busy.is_set():
            self._where_busy.set()
            groups = {ref.task_id().hex(): list(specs) for ref, specs in self.in_flight.items()}
            threading.Thread(target=self._ask_where, args=(groups,), daemon=True).start()
        return cached

    def _ask_where(self, groups: dict[str, list[TrialSpec]]) -> None:
        started = time.monotonic()
        result: dict[str, dict] = self._where[1]
        try:
            from ray.util.state import list_tasks

            # The dashboard's address, not auto-discovery: several clusters on one machine
            # (or a remote one) make "auto" ambiguous or wrong.
            tasks = list_tasks(
                address=self.dashboard_url,
                # Trials only: the live-progress actor's calls are tasks too, thousands of them.
                filters=[
                    ("job_id", "=", ray.get_runtime_context().get_job_id()),
                    ("type", "=", "NORMAL_TASK"),
                ],
                limit=10_000,
                timeout=2,
                raise_on_missing_output=False,
            )
            ips = {node["NodeID"]: node.get("NodeManagerAddress") for node in ray.nodes()}
            by_task = {task.task_id: task for task in tasks}
            result = {}
            for task_id, specs in groups.items():
                task = by_task.get(task_id)
                if task is None:
                    continue
                state = _WAITING_STATES.get(
                    task.state, "running" if task.state == "RUNNING" else str(task.state).lower()
                )
                info = {"state": state, "node_id": task.node_id, "node_ip": ips.get(task.node_id)}
                for spec in specs:
                    result[spec.trial_id] = info
        except Exception:  # noqa: BLE001 (an observability call; the sweep goes on without it)
            pass
        finally:
            now = time.monotonic()
            self._where = (
                now + min(WHERE_LONGEST_S, max(WHERE_EVERY_S, WHERE_DUTY * (now - started))),
                result,
            )
            self._where_busy.clear()

    def wait(self, timeout: float | None = None) -> list[tuple[TrialSpec, TrialOutcome]]:
        """Block until at least one task ends (or ``timeout``); return its trials' outcomes."""
        if not self.in_flight:
            return []
        ready, waiting = ray.wait(list(self.in_flight), num_returns=1, timeout=timeout)
        if ready and waiting:  # and every other task already done: one round takes them all
            ready += ray.wait(waiting, num_returns=len(waiting), timeout=0)[0]
        finished: list[tuple[TrialSpec, TrialOutcome]] = []
        for ref in ready:
            specs = self.in_flight.pop(ref)
            self.live_progress.forget([spec.trial_id for spec in specs])
            try:
                result = ray.get(ref)
                outcomes = result if isinstance(result, list) else [result]
            except (RayError, TaskCancelledError) as error:
                outcomes = [failed_outcome(spec, _error_line(error)) for spec in specs]
            finished.extend(zip(specs, outcomes))
        return finished


def failed_outcome(spec: TrialSpec, error: str, node_id: str = "") -> TrialOutcome:
    """The outcome of a trial that never trained (infrastructure or data problem)."""
    now = time.time()
    return TrialOutcome(
        trial_id=spec.trial_id,
        status=TrialStatus.FAILED.value,
        final_val_loss=float("nan"),
        smoothed_train_loss=float("nan"),
        steps_done=0,
        tokens_done=0,
        wall_seconds=0.0,
        started_at=now,
        ended_at=now,
        error=error[:2000],
        node_id=node_id,
    )


def _error_line(error: Exception) -> str:
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {message}"
