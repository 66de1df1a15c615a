"""Done means: the smoke sweep on a real two-node Ray cluster, through the CLI.

One cluster per module (head + one worker node, one CPU each, both on 127.0.0.1, token
auth on), used in turn by: ``submit --address`` (a driver attached from here), ``submit
--job`` (the whole sweep as a Ray Job, results mirrored to a URI and fetched back), a
recipe that can never be placed, and last a sweep whose worker node is SIGKILLed midway.
Every process the cluster started is killed by id at the end (never ``ray stop``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sweeper.results import read_trials
from tests.cluster.local_cluster import LocalCluster
from tests.conftest import RECIPES

pytestmark = pytest.mark.slow

SMOKE = RECIPES / "smoke.yaml"
PLANNED = 24  # smoke.yaml: 4 cells x 3 lrs x 2 batch sizes


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> LocalCluster:
    root = tmp_path_factory.mktemp("ray")
    started = LocalCluster.start(root, worker_resources={"worker_node": 1})
    try:
        yield started
    finally:
        started.stop()


def sweeper(cluster: LocalCluster, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sweeper", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cluster.env,
    )


def assert_complete_sweep(run_dir: Path) -> pd.DataFrame:
    trials = pd.read_parquet(run_dir / "trials")
    assert len(trials) == PLANNED and trials["trial_id"].nunique() == PLANNED
    assert set(trials["status"]) <= {"complete", "diverged"}, trials[["status", "error"]].to_string()
    return trials


def test_submit_address_runs_trials_on_both_nodes(cluster: LocalCluster, tmp_path: Path) -> None:
    run_dir = tmp_path / "attached"
    # The smoke ladder with 3x the tokens: each task runs for seconds, longer than Ray's state
    # API takes to answer the driver's (background) question of where tasks run.
    smoke = yaml.safe_load(SMOKE.read_text())
    longer = tmp_path / "smoke-longer.yaml"
    longer.write_text(
        yaml.safe_dump(smoke | {"tokens": {"absolute": [3 * d for d in smoke["tokens"]["absolute"]]}})
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sweeper",
            "submit",
            str(longer),
            "--out",
            str(run_dir),
            "--address",
            cluster.gcs_address,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cluster.env,
    )
    # While it runs, the driver's progress.json (what `sweeper status` prints) names the node
    # of each running trial. Read directly and often: the smoke trials last a second or two.
    placed: list[dict] = []
    exported: list[str] = []
    snapshot = tmp_path / "mid-sweep"
    progress = run_dir / "progress.json"
    last_metrics = 0.0
    while process.poll() is None:
        if progress.is_file():
            report = json.loads(progress.read_text())  # replaced atomically: never partial
            running = [item for item in report.get("running", []) if item.get("node_id")]
            placed += running
            if running and not snapshot.is_dir():
                # Keep this moment's state: `sweeper status` renders it after the sweep.
                snapshot.mkdir()
                # As a live driver's: `status` lists no running trials for a driver that is gone,
                # and this copy is rendered after the sweep (this test process stands in for it).
                (snapshot / "progress.json").write_text(json.dumps({**report, "pid": os.getpid()}))
            if time.time() - last_metrics > 1.0:
                exported += [line for line in head_metrics(cluster) if line.startswith("ray_sweeper_trials{")]
                last_metrics = time.time()
        time.sleep(0.2)
    stdout, stderr = process.communicate()
    # Ray's agent exports on a reporting interval: a short sweep may end before the first one.
    deadline = time.time() + 20
    while not any('status="complete"' in line for line in exported) and time.time() < deadline:
        exported += [line for line in head_metrics(cluster) if line.startswith("ray_sweeper_trials{")]
        time.sleep(1.0)
    assert process.returncode == 0, stderr[-3000:]
    trials = assert_complete_sweep(run_dir)
    assert set(trials["node_id"]) == set(cluster.alive_node_ids()), "trials must run on both nodes"
    status_lines = sweeper(cluster, "status", str(snapshot)).stdout.splitlines() if snapshot.is_dir() else []
    OBSERVED.update(
        placed=placed, exported=exported, node_ids=set(trials["node_id"]), status_lines=status_lines
    )


OBSERVED: dict = {}


def test_status_showed_nodes_and_metrics_were_exported() -> None:
    placed, exported = OBSERVED.get("placed", []), OBSERVED.get("exported", [])
    assert placed, "progress.json never named a running trial's node"
    assert {item["node_id"] for item in placed} <= OBSERVED["node_ids"]
    assert any(" on node " in line for line in OBSERVED["status_lines"]), OBSERVED["status_lines"]
    # Sweep progress reached the head's Prometheus endpoint (ray.util.metrics from the driver).
    assert any('status="complete"' in line and 'sweep="smoke"' in line for line in exported), exported[-5:]


def head_metrics(cluster: LocalCluster) -> list[str]:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{cluster.nodes[0].metrics_port}/metrics", timeout=5
        ) as page:
            return page.read().decode().splitlines()
    except OSError:
        return []


def test_submit_job_runs_on_both_nodes_and_results_come_home(cluster: LocalCluster, tmp_path: Path) -> None:
    mirror = tmp_path / "bucket"
    submitted = sweeper(
        cluster,
        "submit",
        str(SMOKE),
        "--job",
        "--address",
        cluster.dashboard_url,
        "--out",
        str(tmp_path / "on-head"),
        "--results",
        f"file://{mirror}",
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = re.search(r"^job (\S+) submitted", submitted.stdout, re.M).group(1)
    assert f"{cluster.dashboard_url}/#/jobs/{job_id}" in submitted.stdout

    followed = sweeper(cluster, "logs", "--job", job_id, "--follow", "--address", cluster.dashboard_url)
    assert followed.returncode == 0, followed.stdout[-3000:] + followed.stderr[-2000:]
    assert f"[{PLANNED}/{PLANNED}]" in followed.stdout

    status = sweeper(cluster, "status", "--job", job_id, "--json", "--address", cluster.dashboard_url)
    report = json.loads(status.stdout)
    assert report["status"] == "SUCCEEDED" and report["results"] == f"file://{mirror}"

    home = tmp_path / "home"
    fetched = sweeper(
        cluster, "fetch", "--job", job_id, "--out", str(home), "--address", cluster.dashboard_url
    )
    assert fetched.returncode == 0, fetched.stderr
    trials = assert_complete_sweep(home)
    assert set(trials["node_id"]) == set(cluster.alive_node_ids()), "job trials must run on both nodes"
    assert len(pd.read_parquet(home / "curves")["trial_id"].unique()) == PLANNED
    assert (home / "recipe.yaml").is_file() and (home / "progress.json").is_file()

    # Without the URI, fetch reads the run folder on the head's disk through a helper job.
    packed = tmp_path / "packed"
    fetched = sweeper(
        cluster,
        "fetch",
        "--job",
        job_id,
        "--out",
        str(packed),
        "--from-head",
        "--address",
        cluster.dashboard_url,
    )
    assert fetched.returncode == 0, fetched.stderr
    assert "on the head node" in fetched.stdout
    assert_complete_sweep(packed)


def test_trial_that_can_never_fit_is_refused_at_once(cluster: LocalCluster, tmp_path: Path) -> None:
    for resources in ({"cpus": 1, "gpus": 1}, {"cpus": 4}):
        recipe = yaml.safe_load(SMOKE.read_text()) | {"resources": resources}
        recipe_file = tmp_path / "too-big.yaml"
        recipe_file.write_text(yaml.safe_dump(recipe))
        started = time.time()
        result = sweeper(
            cluster,
            "submit",
            str(recipe_file),
            "--out",
            str(tmp_path / "never"),
            "--address",
            cluster.gcs_address,
            timeout=90,
        )
        assert result.returncode == 2, result.stdout + result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "no node can ever run a trial" in errors[0], result.stderr
        assert time.time() - started < 60
        assert not (tmp_path / "never" / "trials").exists()


def test_killing_the_worker_node_mid_sweep_still_completes(cluster: LocalCluster, tmp_path: Path) -> None:
    run_dir = tmp_path / "survivor"
    worker = cluster.nodes[1]
    head_id, worker_id = None, None
    # One trial per task, so that work is still waiting when the node dies (fused, the smoke
    # sweep is 4 tasks, which can all be in flight by then), and twice the tokens: results
    # reach the folder in batches (up to 2 s late), and the longest trials run first, so
    # one-second trials could all have started before the folder showed the first four.
    smoke = yaml.safe_load(SMOKE.read_text())
    recipe_file = tmp_path / "smoke-unfused.yaml"
    recipe_file.write_text(
        yaml.safe_dump(
            smoke | {"fuse": "off", "tokens": {"absolute": [2 * d for d in smoke["tokens"]["absolute"]]}}
        )
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sweeper",
            "submit",
            str(recipe_file),
            "--out",
            str(run_dir),
            "--address",
            cluster.gcs_address,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cluster.env,
    )
    killed_at = None
    deadline = time.time() + 200
    while process.poll() is None and time.time() < deadline:
        done = read_trials(run_dir, columns=["node_id"]).table
        if killed_at is None and done.num_rows >= 4:
            nodes = set(done.column("node_id").to_pylist())
            if len(nodes) == 2:  # the worker has taken part: kill it while it holds a trial
                cluster.kill_raylet(worker)
                killed_at = time.time()
        time.sleep(0.3)
    stdout, stderr = process.communicate(timeout=max(1, deadline - time.time()))
    assert killed_at is not None, "the sweep ended before the worker node could be killed"
    assert process.returncode == 0, stderr[-3000:]
    trials = assert_complete_sweep(run_dir)
    alive = cluster.alive_node_ids()
    assert len(alive) == 1
    head_id = alive[0]
    # Everything that started after the kill ran on the head.
    late = trials[trials["started_at"] > pd.Timestamp(killed_at + 1.0, unit="s", tz="UTC")]
    assert len(late) > 0 and set(late["node_id"]) == {head_id}
    del worker_id
