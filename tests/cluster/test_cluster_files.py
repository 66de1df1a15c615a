"""cluster/ files parse against the schemas they target (fast: no cluster, no network)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import jsonschema
import ray
import yaml

from sweeper.cli.running import submit
from sweeper.recipe import Recipe
from tests.conftest import REPO

CLUSTER = REPO / "cluster"


def test_launcher_config_matches_rays_schema() -> None:
    config = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    assert config["provider"]["type"] == "aws"
    head = config["available_node_types"][config["head_node_type"]]
    workers = [t for name, t in config["available_node_types"].items() if name != config["head_node_type"]]
    assert head["node_config"]["InstanceType"].startswith(("m", "c"))  # a CPU head
    assert any(w["node_config"]["InstanceType"].startswith(("g", "p")) for w in workers)  # GPU workers
    assert any("pip install" in c and "sweeper" in c for c in config["setup_commands"])
    head_start = " ".join(config["head_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in head_start and "--dashboard-host=127.0.0.1" in head_start
    assert "RAY_AUTH_MODE=token" in " ".join(config["worker_start_ray_commands"])
    assert "~/.ray/auth_token" in config["file_mounts"]


def _containers(template: dict) -> list[dict]:
    containers = template["spec"]["containers"]
    for container in containers:
        assert container["name"] and container["image"], container
    return containers


def _check_ray_cluster_spec(spec: dict) -> None:
    """Required fields of RayClusterSpec as the ray.io/v1 CRD (KubeRay >= 1.5.1) has them."""
    assert re.fullmatch(r"2\.\d+\.\d+", spec["rayVersion"]) and int(spec["rayVersion"].split(".")[1]) >= 52
    assert spec["authOptions"]["mode"] == "token"
    head = spec["headGroupSpec"]
    assert isinstance(head.get("rayStartParams", {}), dict)
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    _containers(head["template"])
    assert spec["workerGroupSpecs"]
    for group in spec["workerGroupSpecs"]:
        assert group["groupName"] and isinstance(group["rayStartParams"], dict)
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        limits = [c["resources"]["limits"] for c in _containers(group["template"])]
        assert any("nvidia.com/gpu" in limit for limit in limits)
        for params in (group["rayStartParams"], head.get("rayStartParams", {})):
            assert all(isinstance(v, str) for v in params.values()), "rayStartParams values are strings"


def test_kuberay_raycluster() -> None:
    manifest = yaml.safe_load((CLUSTER / "kuberay-raycluster.yaml").read_text())
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayCluster"
    assert manifest["metadata"]["name"]
    _check_ray_cluster_spec(manifest["spec"])


def test_kuberay_rayjob_runs_a_sweep_from_a_recipe() -> None:
    documents = list(yaml.safe_load_all((CLUSTER / "kuberay-rayjob.yaml").read_text()))
    by_kind = {d["kind"]: d for d in documents}
    job = by_kind["RayJob"]
    assert job["apiVersion"] == "ray.io/v1" and job["metadata"]["name"]
    spec = job["spec"]
    _check_ray_cluster_spec(spec["rayClusterSpec"])
    assert spec["submissionMode"] in ("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode")
    yaml.safe_load(spec["runtimeEnvYAML"])
    # The entrypoint is a valid call of the job-side CLI, and its recipe is mounted.
    words = shlex.split(spec["entrypoint"])
    assert words[:4] == ["python", "-m", "sweeper", "submit"]
    arguments = submit.make_context("submit", words[4:]).params
    assert arguments["results_uri"] and not arguments["job"]
    mounts = {
        m["mountPath"]: m["name"]
        for c in _containers(spec["rayClusterSpec"]["headGroupSpec"]["template"])
        for m in c.get("volumeMounts", [])
    }
    recipe = Path(arguments["recipe_path"])
    mount_path = str(recipe.parent)
    volumes = {v["name"]: v for v in spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["volumes"]}
    config_map = volumes[mounts[mount_path]]["configMap"]["name"]
    assert by_kind["ConfigMap"]["metadata"]["name"] == config_map
    Recipe.model_validate(yaml.safe_load(by_kind["ConfigMap"]["data"][recipe.name]))


DOCKER_INSTRUCTIONS = {
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
}


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, backslash continuations joined."""
    instructions, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, arguments = pending.strip().partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "dangling line continuation"
    return instructions


def test_dockerfile_parses_and_installs_the_package() -> None:
    instructions = parse_dockerfile((CLUSTER / "Dockerfile").read_text())
    assert {k for k, _ in instructions} <= DOCKER_INSTRUCTIONS
    keywords = [k for k, _ in instructions]
    assert keywords[0] in ("ARG", "FROM") and "FROM" in keywords
    assert all(k == "ARG" for k in keywords[: keywords.index("FROM")])
    assert any(k == "RUN" and "pip install" in a for k, a in instructions)
    copied = [a.split()[-2] for k, a in instructions if k == "COPY"]
    for source in copied:
        assert (REPO / source).exists(), f"COPY source {source} missing from the repo"
    assert any(k == "ENV" and "RAY_AUTH_MODE=token" in a for k, a in instructions)


def test_readme_walks_from_nothing_to_results() -> None:
    readme = (CLUSTER / "README.md").read_text().lower()
    for topic in (
        "ray up",
        "ray dashboard",
        "--job",
        "sweeper logs",
        "sweeper fetch",
        "ray down",
        "ray_auth_mode=token",
        "run code on the cluster",
        "prometheus",
        "grafana",
        "sweeper_trials",
    ):
        assert topic in readme, topic
