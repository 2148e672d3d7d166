"""The cluster manifests pass Ray's launcher validation, KubeRay's CRD schema and our
cross-checks; broken copies of them fail."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from cluster import validate

CRD = Path(__file__).parents[1] / "fixtures" / "kuberay" / "ray.io_rayclusters.yaml"


@pytest.fixture(scope="module")
def required() -> set[str]:
    return validate.actor_resources()


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return validate.crd_schema(CRD)


def test_every_manifest_in_the_repository_is_valid() -> None:
    assert validate.validate_all(CRD) == {
        "ray-cluster.yaml": [],
        "kuberay/raycluster.yaml": [],
        "kuberay/gateway.yaml": [],
        "regions/cn-east": [],
        "regions/cn-north": [],
    }


def test_actor_resources_come_from_the_actor_classes(required: set[str]) -> None:
    assert {"room_shard", "media", "face", "ingest"} <= required


def test_launcher_head_has_no_workload_and_gpu_type_has_gpus() -> None:
    config = validate.load_yaml(validate.LAUNCHER)
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}
    gpu_types = [t for t in types.values() if "face" in t["resources"]]
    assert gpu_types
    assert all(t["resources"]["GPU"] >= 1 for t in gpu_types)


def test_ray_rejects_a_launcher_field_it_does_not_know(required: set[str]) -> None:
    config = validate.load_yaml(validate.LAUNCHER)
    config["available_node_types"]["cpu_worker"]["gpus_please"] = 1
    problems = validate.check_launcher(config, required)
    assert problems
    assert problems[0].startswith("ray:")


def test_launcher_gpu_type_without_gpus_and_min_above_max_fail(required: set[str]) -> None:
    config = validate.load_yaml(validate.LAUNCHER)
    del config["available_node_types"]["gpu_worker"]["resources"]["GPU"]
    config["available_node_types"]["cpu_worker"]["min_workers"] = 101
    problems = validate.check_launcher(config, required)
    assert "gpu_worker: offers 'face' but no GPU" in problems
    assert "cpu_worker: min_workers 101 > max_workers 100" in problems


def test_launcher_missing_custom_resource_and_busy_head_fail(required: set[str]) -> None:
    config = validate.load_yaml(validate.LAUNCHER)
    del config["available_node_types"]["cpu_worker"]["resources"]["ingest"]
    config["available_node_types"]["head"]["resources"] = {"CPU": 4, "room_shard": 10}
    problems = validate.check_launcher(config, required)
    assert "resources: no worker type offers 'ingest'" in problems
    assert "head: the head must offer no CPU and no custom resource" in problems


def _groups(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["groupName"]: g for g in doc["spec"]["workerGroupSpecs"]}


def test_raycluster_uses_autoscaler_v2_and_gpu_limits() -> None:
    doc = validate.load_yaml(validate.RAYCLUSTER)
    assert doc["spec"]["enableInTreeAutoscaling"] is True
    assert doc["spec"]["autoscalerOptions"]["version"] == "v2"
    offered = validate.group_resources(_groups(doc)["gpu"])
    assert offered["nvidia.com/gpu"] == 1
    assert offered["face"] == 1000


def test_crd_schema_rejects_a_wrong_type(schema: dict[str, Any], required: set[str]) -> None:
    doc = validate.load_yaml(validate.RAYCLUSTER)
    _groups(doc)["cpu"]["maxReplicas"] = "many"
    del _groups(doc)["gpu"]["groupName"]
    problems = validate.check_raycluster(doc, schema, required)
    assert any(p.startswith("crd: spec/workerGroupSpecs/0/maxReplicas") for p in problems)
    assert any("'groupName' is a required property" in p for p in problems)


def test_raycluster_gpu_group_without_gpu_and_min_above_max_fail(
    schema: dict[str, Any], required: set[str]
) -> None:
    doc = validate.load_yaml(validate.RAYCLUSTER)
    gpu = _groups(doc)["gpu"]
    for container in gpu["template"]["spec"]["containers"]:
        for side in ("limits", "requests"):
            del container["resources"][side]["nvidia.com/gpu"]
    del gpu["template"]["spec"]["tolerations"]
    _groups(doc)["cpu"]["minReplicas"] = 200
    problems = validate.check_raycluster(doc, schema, required)
    assert "gpu: offers 'face' but no nvidia.com/gpu" in problems
    assert "gpu: no toleration for nvidia.com/gpu taints" in problems
    assert "cpu: minReplicas 200 > maxReplicas 100" in problems


def test_raycluster_without_autoscaler_or_with_busy_head_fails(
    schema: dict[str, Any], required: set[str]
) -> None:
    doc = copy.deepcopy(validate.load_yaml(validate.RAYCLUSTER))
    doc["spec"]["enableInTreeAutoscaling"] = False
    doc["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = "4"
    problems = validate.check_raycluster(doc, schema, required)
    assert "autoscaling: enableInTreeAutoscaling is not true" in problems
    assert any(p.startswith("head:") for p in problems)


def test_gateway_refuses_secrets_in_the_repo_and_unknown_settings() -> None:
    docs = validate.load_all(validate.GATEWAY)
    docs.append({"kind": "Secret", "stringData": {"EXAMDAY_DATA_MASTER_KEY": "x"}})
    next(d for d in docs if d["kind"] == "ConfigMap")["data"]["EXAMDAY_NO_SUCH_KNOB"] = "1"
    problems = validate.check_gateway(docs)
    assert "gateway: a Secret with values in the repository" in problems
    assert "configmap: EXAMDAY_NO_SUCH_KNOB is not a setting" in problems


def test_dashboard_queries_only_metrics_the_gateway_exports() -> None:
    import json
    import re

    from api import metrics

    source = Path(metrics.__file__).read_text()
    exported = {f"examday_{name}" for name in re.findall(r'_gauge\(\s*"(\w+)"', source)}
    exported |= set(re.findall(r'"(examday_\w+)"', source))
    exported |= {f"examday_media_shard_{key}" for key in metrics.MEDIA_FIELDS}
    dashboard = json.loads((validate.MANIFESTS / "grafana-dashboard.json").read_text())
    queried = {
        re.sub(r"_(sum|count|bucket)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"examday_\w+", target["expr"])
    }
    assert queried
    assert queried - exported == set()
