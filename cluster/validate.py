"""Checks of the cluster manifests: Ray's own launcher validation, KubeRay's CRD schema,
and the cross-checks that neither knows about (our actors' custom resources, GPUs).

Each `check_*` returns a list of problems (empty when the manifest is fine) rather than
raising on the first, so that `examday cluster validate` and the tests see all of them.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from cluster import ray_private

MANIFESTS = Path(__file__).parent / "manifests"
LAUNCHER = MANIFESTS / "ray-cluster.yaml"
RAYCLUSTER = MANIFESTS / "kuberay" / "raycluster.yaml"
GATEWAY = MANIFESTS / "kuberay" / "gateway.yaml"
# The resource that face verification replicas ask for: its nodes must have GPUs.
GPU_RESOURCE = "face"
K8S_GPU = "nvidia.com/gpu"


def load_yaml(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text())
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: not a mapping")
    return loaded


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if isinstance(doc, dict)]


def actor_resources() -> set[str]:
    """The custom resources our actor classes ask for, read from their `@ray.remote` options."""
    from actors.ingest.shard import LogIngest
    from actors.media.shard import MediaShard
    from actors.rooms.shard import RoomShard
    from infra.services import NODE_RESOURCES

    asked: set[str] = set(NODE_RESOURCES)
    for cls in (RoomShard, MediaShard, LogIngest):
        asked |= ray_private.actor_class_resources(cls)
    return asked


# -- Ray cluster launcher ------------------------------------------------------


def check_launcher(config: Mapping[str, Any], required: Iterable[str]) -> list[str]:
    """Ray's `prepare_config` + `validate_config` (what `ray up` runs), then ours."""
    problems: list[str] = []
    try:
        ray_private.validate_launcher_config(copy.deepcopy(dict(config)))
    except (ValueError, RuntimeError, KeyError, jsonschema.ValidationError) as exc:
        problems.append(f"ray: {getattr(exc, 'message', exc)}")
    types = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    offered: dict[str, dict[str, Any]] = {}
    for name, node in types.items():
        resources = dict(node.get("resources") or {})
        low, high = node.get("min_workers", 0), node.get("max_workers", 0)
        if _above(low, high):
            problems.append(f"{name}: min_workers {low} > max_workers {high}")
        if name == head:
            if resources.get("CPU", 0) != 0 or set(resources) - {"CPU"}:
                problems.append(f"{name}: the head must offer no CPU and no custom resource")
            continue
        offered[name] = resources
    problems += _cross_check(offered, required, gpu_key="GPU")
    return problems


# -- KubeRay -------------------------------------------------------------------


def crd_schema(crd_path: Path) -> dict[str, Any]:
    crd = load_yaml(crd_path)
    for version in crd["spec"]["versions"]:
        if version.get("storage"):
            schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
            return schema
    raise ValueError(f"{crd_path}: no storage version")


def check_raycluster(
    doc: Mapping[str, Any], schema: Mapping[str, Any], required: Iterable[str]
) -> list[str]:
    problems = [
        f"crd: {'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in jsonschema.Draft7Validator(schema).iter_errors(doc)
    ]
    spec = doc.get("spec") or {}
    if not spec.get("enableInTreeAutoscaling"):
        problems.append("autoscaling: enableInTreeAutoscaling is not true")
    if (spec.get("autoscalerOptions") or {}).get("version") != "v2":
        problems.append("autoscaling: autoscalerOptions.version is not v2")
    head = spec.get("headGroupSpec") or {}
    if str((head.get("rayStartParams") or {}).get("num-cpus")) != "0":
        problems.append("head: rayStartParams num-cpus must be 0 (no workload on the head)")
    offered: dict[str, dict[str, Any]] = {}
    for group in spec.get("workerGroupSpecs") or []:
        name = str(group.get("groupName"))
        low, high = group.get("minReplicas", 0), group.get("maxReplicas", 0)
        if _above(low, high):
            problems.append(f"{name}: minReplicas {low} > maxReplicas {high}")
        offered[name] = group_resources(group)
        if GPU_RESOURCE in offered[name] and not _tolerates_gpu(group):
            problems.append(f"{name}: no toleration for {K8S_GPU} taints")
    problems += _cross_check(offered, required, gpu_key=K8S_GPU)
    return problems


def group_resources(group: Mapping[str, Any]) -> dict[str, Any]:
    """Custom resources from rayStartParams (a JSON string, quoted as KubeRay documents it)
    and the group's `resources` field, plus the GPU limit of its containers."""
    params = group.get("rayStartParams") or {}
    offered: dict[str, Any] = dict(group.get("resources") or {})
    raw = params.get("resources")
    if raw:
        decoded = json.loads(raw)
        offered.update(json.loads(decoded) if isinstance(decoded, str) else decoded)
    containers = ((group.get("template") or {}).get("spec") or {}).get("containers") or []
    for container in containers:
        limits = (container.get("resources") or {}).get("limits") or {}
        if K8S_GPU in limits:
            offered[K8S_GPU] = int(limits[K8S_GPU])
    if "num-gpus" in params and K8S_GPU not in offered:
        offered["num-gpus"] = params["num-gpus"]
    return offered


def _tolerates_gpu(group: Mapping[str, Any]) -> bool:
    tolerations = ((group.get("template") or {}).get("spec") or {}).get("tolerations") or []
    return any(t.get("key") == K8S_GPU for t in tolerations)


def check_gateway(docs: list[dict[str, Any]]) -> list[str]:
    """The gateway's objects: configuration only by ConfigMap/Secret reference, real
    `EXAMDAY_` names, no Secret with values in the repository."""
    from infra.settings import Settings

    problems: list[str] = []
    kinds = {doc.get("kind") for doc in docs}
    for kind in ("ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler"):
        if kind not in kinds:
            problems.append(f"gateway: no {kind}")
    if "Secret" in kinds:
        problems.append("gateway: a Secret with values in the repository")
    fields = {f"EXAMDAY_{name.upper()}" for name in Settings.model_fields}
    for doc in docs:
        if doc.get("kind") == "ConfigMap":
            for key in doc.get("data") or {}:
                if key.startswith("EXAMDAY_") and key.split("__")[0] not in fields:
                    problems.append(f"configmap: {key} is not a setting")
        if doc.get("kind") == "HorizontalPodAutoscaler":
            spec = doc.get("spec") or {}
            if _above(spec.get("minReplicas", 1), spec.get("maxReplicas", 0)):
                problems.append("hpa: minReplicas > maxReplicas")
    return problems


# -- shared --------------------------------------------------------------------


def _above(low: Any, high: Any) -> bool:
    # Wrong types are the schema's finding; only compare what is comparable.
    return isinstance(low, int) and isinstance(high, int) and low > high


def _cross_check(
    offered: Mapping[str, Mapping[str, Any]], required: Iterable[str], *, gpu_key: str
) -> list[str]:
    problems: list[str] = []
    for resource in sorted(required):
        if not any(resource in resources for resources in offered.values()):
            problems.append(f"resources: no worker type offers {resource!r}")
    for name, resources in offered.items():
        if GPU_RESOURCE in resources and not resources.get(gpu_key):
            problems.append(f"{name}: offers {GPU_RESOURCE!r} but no {gpu_key}")
    return problems


def validate_all(crd_path: Path) -> dict[str, list[str]]:
    """Every manifest in the repository, by file."""
    required = actor_resources()
    schema = crd_schema(crd_path)
    return {
        str(LAUNCHER.relative_to(MANIFESTS)): check_launcher(load_yaml(LAUNCHER), required),
        str(RAYCLUSTER.relative_to(MANIFESTS)): check_raycluster(
            load_yaml(RAYCLUSTER), schema, required
        ),
        str(GATEWAY.relative_to(MANIFESTS)): check_gateway(load_all(GATEWAY)),
    }
