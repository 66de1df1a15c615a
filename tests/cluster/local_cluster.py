"""A real multi-node Ray cluster on this one machine, owned by the test that starts it.

Each node is a ``ray start --block`` process in its own process group and temp dir, on
127.0.0.1, with every port chosen free (other engineers and tests run Ray here at the same
time, so Ray's fixed default ports would collide). Stopping kills exactly the processes
this helper started, by process group and by pid: never ``ray stop``, which would kill
every Ray on the machine.

Token authentication stays on (Ray 2.60's default for local clusters): the cluster gets a
fresh token through RAY_AUTH_MODE=token + RAY_AUTH_TOKEN, and ``env`` hands both to every
client (CLI subprocesses), so the test neither reads nor writes ~/.ray/auth_token.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, name) from /proc (Linux; psutil is not a dependency)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The name sits in parentheses and may hold spaces; fields after it are fixed.
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z":  # zombies are dead already
            table[int(entry.name)] = (int(fields[1]), name)
    return table


def descendants(pid: int) -> dict[int, str]:
    """pid -> name of every living descendant of ``pid``."""
    table = _proc_table()
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, name) in table.items():
            if ppid == parent and child not in found:
                found[child] = name
                frontier.append(child)
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class NodeStartError(RuntimeError):
    """A ``ray start`` exited early (most often: a port taken between probe and bind)."""


@dataclass
class Node:
    name: str
    process: subprocess.Popen
    log: Path
    metrics_port: int = 0  # the node's Prometheus endpoint (http://127.0.0.1:PORT/metrics)

    def ray_pids(self) -> dict[str, int]:
        """Process name -> pid of this node's Ray daemons (raylet, gcs_server, ...)."""
        found: dict[str, int] = {}
        for pid, name in sorted(descendants(self.process.pid).items()):
            found.setdefault(name, pid)
        return found


@dataclass
class LocalCluster:
    root: Path
    env: dict[str, str]
    gcs_address: str = ""
    dashboard_url: str = ""
    nodes: list[Node] = field(default_factory=list)
    _pids: set[int] = field(default_factory=set)

    @classmethod
    def start(
        cls, root: Path | None, worker_resources: dict[str, float], timeout: float = 90
    ) -> LocalCluster:
        env = dict(os.environ)
        env.pop("RAY_ADDRESS", None)
        env.update(
            {
                "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN": uuid.uuid4().hex + uuid.uuid4().hex,
                "RAY_USAGE_STATS_ENABLED": "0",
                # The job's entrypoint says `python`: make it this venv's.
                "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
                # Notice a dead node in seconds, not the default tens of seconds.
                "RAY_health_check_period_ms": "1000",
                "RAY_health_check_timeout_ms": "1000",
                "RAY_health_check_failure_threshold": "3",
                # Export metrics every second, so a 20-second sweep shows up in them.
                "RAY_metrics_report_interval_ms": "1000",
            }
        )
        for attempt in range(3):
            # A port probed free can be taken by another process before Ray binds it (other
            # Ray clusters start here too): then ray start exits, and a fresh set of ports
            # is tried.
            # Ray's unix sockets live under the temp dir and their paths may not exceed 107
            # bytes: pytest's tmp_path is too deep, so the nodes get a short folder of /tmp.
            short = Path(tempfile.mkdtemp(prefix="sw-", dir="/tmp"))
            cluster = cls(root=short, env=env)
            try:
                port, dashboard_port = free_port(), free_port()
                cluster._start_node(
                    "head",
                    [
                        "--head",
                        f"--port={port}",
                        "--node-ip-address=127.0.0.1",
                        "--num-cpus=1",
                        "--include-dashboard=true",
                        "--dashboard-host=127.0.0.1",
                        f"--dashboard-port={dashboard_port}",
                        f"--ray-client-server-port={free_port()}",
                        '--resources={"head_node": 1}',
                    ],
                )
                cluster.gcs_address = f"127.0.0.1:{port}"
                cluster.dashboard_url = f"http://127.0.0.1:{dashboard_port}"
                cluster.wait_for_nodes(1, timeout)
                cluster.add_worker(worker_resources, timeout)
                return cluster
            except NodeStartError:
                cluster.stop()
                if attempt == 2:
                    raise
            except BaseException:
                cluster.stop()
                raise
        raise AssertionError("unreachable")

    def add_worker(self, resources: dict[str, float], timeout: float = 90) -> Node:
        node = self._start_node(
            f"worker{len(self.nodes)}",
            [
                f"--address={self.gcs_address}",
                "--node-ip-address=127.0.0.1",
                "--num-cpus=1",
                f"--resources={json.dumps(resources)}",
            ],
        )
        self.wait_for_nodes(len(self.nodes), timeout)
        return node

    def _start_node(self, name: str, arguments: list[str]) -> Node:
        temp_dir = self.root / name
        temp_dir.mkdir(parents=True, exist_ok=True)
        worker_base = random.randrange(20000, 59000, 100)
        ports = [
            f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--min-worker-port={worker_base}",
            f"--max-worker-port={worker_base + 99}",
        ]
        log = self.root / f"{name}.log"
        process = subprocess.Popen(
            [
                str(BIN / "ray"),
                "start",
                "--block",
                f"--temp-dir={temp_dir}",
                "--object-store-memory=100000000",
                "--disable-usage-stats",
                *arguments,
                *ports,
            ],
            stdout=open(log, "w"),
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,  # its own process group: killable as one, apart from pytest
        )
        node = Node(name, process, log, metrics_port=int(ports[5].split("=")[1]))
        self.nodes.append(node)
        self._pids.add(process.pid)
        return node

    def alive_node_ids(self) -> list[str]:
        return [n["node_id"] for n in self._list_nodes() if n.get("state") == "ALIVE"]

    def _list_nodes(self) -> list[dict]:
        result = subprocess.run(
            [str(BIN / "ray"), "list", "nodes", "--format=json", f"--address={self.dashboard_url}"],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
        )
        if result.returncode != 0:
            return []
        try:
            return json.loads(result.stdout)
        except json.JSONDecodeError:
            return []

    def wait_for_nodes(self, count: int, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for node in self.nodes:
                self._pids.update(descendants(node.process.pid))  # remember them for stop()
                if node.process.poll() is not None:
                    raise NodeStartError(f"ray start for {node.name} exited: {node.log.read_text()[-2000:]}")
            if self.dashboard_url and len(self.alive_node_ids()) >= count:
                return
            time.sleep(1.0)
        raise TimeoutError(f"cluster did not reach {count} alive nodes in {timeout:.0f}s")

    def kill_raylet(self, node: Node) -> int:
        """SIGKILL the node's raylet (a node crash, as the GCS sees it); return its pid."""
        pid = node.ray_pids()["raylet"]
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self) -> None:
        """Kill every process this cluster started: each node's process group, then any
        remembered or still-descended pid (workers may outlive their raylet briefly)."""
        for node in self.nodes:
            self._pids.update(descendants(node.process.pid))
        for node in reversed(self.nodes):
            try:
                os.killpg(node.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10
        for node in self.nodes:
            try:
                node.process.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
        living = _proc_table()
        for pid in self._pids:
            if pid in living:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for node in self.nodes:
            try:
                os.killpg(node.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if node.process.poll() is None:
                node.process.kill()
            node.process.wait(timeout=5)
        shutil.rmtree(self.root, ignore_errors=True)
