"""Checks of the cluster manifests: Ray's own launcher validation, KubeRay's CRD schema,
and the cross-checks that neither knows about (our actors' custom resources, GPUs).

Each `check_*` returns a list of problems (empty when the manifest is fine) rather than
raising on the first, so that `examday cluster validate` and the tests see all of them.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from cluster import ray_private, regions

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


# -- the rendered regions (cluster/regions.py) ------------------------------------------

# The Kubernetes release whose schemas (bundled by kubernetes-validate) the objects must
# pass, strict: an unknown field is an error, as `kubectl apply --validate=strict` makes it.
KUBERNETES_VERSION = "1.33"
# Never reachable from outside the Ray nodes: the Ray pods and the gateway pods.
PRIVATE_RAY_PORTS = {
    regions.RAY_DASHBOARD_PORT: "dashboard",
    regions.RAY_GCS_PORT: "GCS",
    regions.RAY_CLIENT_PORT: "client",
}
HEAD_LABELS = {regions.RAY_CLUSTER_LABEL: regions.CLUSTER, regions.RAY_NODE_TYPE_LABEL: "head"}
MEDIA_LABELS = {regions.RAY_CLUSTER_LABEL: regions.CLUSTER, regions.RAY_GROUP_LABEL: "media"}
# The pods that may be reached from outside the cluster, and on what protocol.
PUBLIC = {"examday-gateway": ("TCP",), "examday-turn": ("UDP", "TCP")}


def check_kubernetes(
    docs: list[dict[str, Any]], schema: Mapping[str, Any], required: Iterable[str]
) -> list[str]:
    """Every object against the Kubernetes schemas (kubernetes-validate, offline), the
    RayCluster against KubeRay's CRD and our cross-checks."""
    try:
        import kubernetes_validate  # type: ignore[import-untyped]
    except ImportError:
        return ["kubernetes-validate is not installed: pip install 'examday[validate]'"]
    problems: list[str] = []
    for doc in docs:
        where = _where(doc)
        if doc.get("kind") == "RayCluster":
            problems += [f"{where}: {p}" for p in check_raycluster(doc, schema, required)]
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(map(str, exc.path))
            problems.append(f"{where}: kubernetes {exc.version}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{where}: {exc.message}")
    return problems


def check_region(docs: list[dict[str, Any]]) -> list[str]:
    """Our rules of a region's deployment (cluster/regions.py says why each holds)."""
    problems: list[str] = []
    kinds = [doc.get("kind") for doc in docs]
    if "Secret" in kinds:
        problems.append("a Secret with values in the rendered manifests")
    clusters = [doc for doc in docs if doc.get("kind") == "RayCluster"]
    if len(clusters) != 1:
        return [*problems, f"{len(clusters)} RayClusters, not 1"]
    (cluster,) = clusters
    problems += _check_ray_secrets(docs)
    problems += _check_ray_auth(docs)
    problems += _check_gateway_ray_node(docs)
    head = cluster["spec"]["headGroupSpec"]
    if (head.get("rayStartParams") or {}).get("dashboard-host") not in ("127.0.0.1", "localhost"):
        problems.append("ray head: the dashboard is not bound to 127.0.0.1")
    if head.get("serviceType", "ClusterIP") != "ClusterIP":
        problems.append("ray head: its Service is reachable from outside the cluster")
    problems += _check_media(cluster)
    problems += _check_turn(docs)
    problems += _check_network_policies(docs)
    problems += _check_probes_and_budgets(docs)
    problems += _check_settings(docs, cluster)
    return problems


def _where(doc: Mapping[str, Any]) -> str:
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


def _ray_containers(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(o, c) for d, o, c in regions.iter_containers(docs) if d["kind"] == "RayCluster"]


def _check_ray_secrets(docs: list[dict[str, Any]]) -> list[str]:
    """Ray pods (head, workers, media, the autoscaler) read the Ray token and no other
    secret: not the token signing, update signing, pseudonym or any other platform key."""
    problems = []
    for owner, container in _ray_containers(docs):
        for source in container.get("envFrom") or []:
            if "secretRef" in source:
                problems.append(f"{owner}: takes a whole Secret ({source['secretRef']['name']})")
        for env in container.get("env") or []:
            ref = (env.get("valueFrom") or {}).get("secretKeyRef")
            if env["name"] in regions.GATEWAY_ONLY_ENV:
                problems.append(f"{owner}: has {env['name']}")
            elif ref and (ref["name"], ref["key"]) != (regions.RAY_TOKEN.secret, "auth_token"):
                problems.append(f"{owner}: reads secret {ref['name']}/{ref['key']}")
    return problems


def _env(container: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {env["name"]: env for env in container.get("env") or []}


def _check_ray_auth(docs: list[dict[str, Any]]) -> list[str]:
    """RAY_AUTH_MODE=token with the token from a Secret on every Ray container and on the
    gateway, which joins the cluster as a Ray node."""
    problems = []
    owners = _ray_containers(docs) + [
        (o, c)
        for d, o, c in regions.iter_containers(docs)
        if d["metadata"]["name"] == "examday-gateway"
    ]
    for owner, container in owners:
        env = _env(container)
        if (env.get("RAY_AUTH_MODE") or {}).get("value") != "token":
            problems.append(f"{owner}: RAY_AUTH_MODE is not token")
        token = env.get(regions.RAY_TOKEN_ENV) or {}
        if "secretKeyRef" not in (token.get("valueFrom") or {}):
            problems.append(f"{owner}: {regions.RAY_TOKEN_ENV} not from a Secret")
    return problems


def _check_gateway_ray_node(docs: list[dict[str, Any]]) -> list[str]:
    """No gateway reaches Ray through Ray Client (`ray://`): its pod starts a Ray node that
    takes no work (`--num-cpus=0`, only the gateway resource) on the GCS address, and the
    gateway is a driver on it."""
    problems = []
    config = next((d.get("data") or {} for d in docs if d.get("kind") == "ConfigMap"), {})
    for doc, owner, container in regions.iter_containers(docs):
        if doc["metadata"]["name"] != "examday-gateway":
            continue
        address = _environment(container, config).get("EXAMDAY_RAY_ADDRESS", "")
        if address.startswith("ray://") or not address:
            problems.append(f"{owner}: EXAMDAY_RAY_ADDRESS is {address!r}, not a GCS address")
        command = " ".join([*(container.get("command") or []), *(container.get("args") or [])])
        if "ray://" in command:
            problems.append(f"{owner}: its command uses Ray Client (ray://)")
        starts = "ray start --address=" in command and "--num-cpus=0" in command
        if not starts or f'{{"{regions.GATEWAY_RESOURCE}": 1}}' not in command:
            problems.append(
                f"{owner}: does not start a Ray node of its own (ray start --address="
                f"... --num-cpus=0 --resources='{{\"{regions.GATEWAY_RESOURCE}\": 1}}')"
            )
    return problems


def _check_media(cluster: Mapping[str, Any]) -> list[str]:
    """Media pods: an announced address, and a UDP host port for each media shard."""
    problems = []
    groups = cluster["spec"].get("workerGroupSpecs") or []
    media = [g for g in groups if "media" in group_resources(g)]
    if not media:
        problems.append("media: no worker group offers 'media'")
    for group in media:
        name = group["groupName"]
        shards = int(group_resources(group)["media"])
        for container in group["template"]["spec"]["containers"]:
            if "EXAMDAY_MEDIA__ANNOUNCED_ADDRESSES" not in _env(container):
                problems.append(f"{name}: media pods without EXAMDAY_MEDIA__ANNOUNCED_ADDRESSES")
            udp = [
                p
                for p in container.get("ports") or []
                if p.get("protocol") == "UDP" and p.get("hostPort")
            ]
            if len(udp) < shards and not group["template"]["spec"].get("hostNetwork"):
                problems.append(f"{name}: {shards} media shards, {len(udp)} UDP host ports")
    return problems


# coturn's flags without which it is an open relay, or takes credentials we did not mint.
TURN_FLAGS = ("--use-auth-secret", "--no-tcp-relay", "--denied-peer-ip=0.0.0.0-255.255.255.255")


def _check_turn(docs: list[dict[str, Any]]) -> list[str]:
    turns = [
        c for d, _, c in regions.iter_containers(docs) if d["metadata"]["name"] == "examday-turn"
    ]
    if not turns:
        return ["turn: no coturn Deployment"]
    problems = []
    for container in turns:
        args = container.get("args") or []
        problems += [f"turn: coturn without {flag}" for flag in TURN_FLAGS if flag not in args]
        if not any(a.startswith("--allowed-peer-ip=") for a in args):
            problems.append("turn: relays to no media shard (no --allowed-peer-ip)")
        if "TURN_SHARED_SECRET" not in _env(container):
            problems.append("turn: no shared secret")
    return problems


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a podSelector (matchLabels only; we write no expressions) takes pods with
    these labels."""
    if selector.get("matchExpressions"):
        return True  # unknown: count it as covering
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def _opens(rule: Mapping[str, Any], port: int, protocol: str = "TCP") -> bool:
    ports = rule.get("ports")
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        low = entry.get("port")
        if (
            low is None
            or low == port
            or (isinstance(low, int) and low <= port <= entry.get("endPort", low))
        ):
            return True
    return False


def _from_outside(peer: Mapping[str, Any]) -> bool:
    return "ipBlock" in peer or "namespaceSelector" in peer


def _check_network_policies(docs: list[dict[str, Any]]) -> list[str]:
    problems = []
    policies = [d for d in docs if d.get("kind") == "NetworkPolicy"]
    if not any(
        not p["spec"].get("podSelector")
        and "Ingress" in p["spec"].get("policyTypes", [])
        and not p["spec"].get("ingress")
        for p in policies
    ):
        problems.append("networkpolicy: no default deny of ingress")
    on_head = [p for p in policies if _selects(p["spec"].get("podSelector") or {}, HEAD_LABELS)]
    if not any(p["spec"].get("podSelector") for p in on_head):
        problems.append("networkpolicy: none covers the Ray head (dashboard 8265, GCS, client)")
    for policy in on_head:
        for rule in policy["spec"].get("ingress") or []:
            for port, what in PRIVATE_RAY_PORTS.items():
                if not _opens(rule, port):
                    continue
                peers = rule.get("from") or [{}]
                allowed = [regions.RAY_PODS, regions.GATEWAY_PODS]
                for peer in peers:
                    if peer not in allowed:
                        source = peer or "anyone"
                        problems.append(
                            f"{_where(policy)}: opens the Ray {what} {port} to {source}"
                        )
    for policy in policies:
        selector = policy["spec"].get("podSelector") or {}
        for rule in policy["spec"].get("ingress") or []:
            if not any(_from_outside(peer) for peer in rule.get("from") or [{"ipBlock": {}}]):
                continue
            app = (selector.get("matchLabels") or {}).get("app")
            protocols = {e.get("protocol", "TCP") for e in rule.get("ports") or [{}]}
            if app in PUBLIC and rule.get("ports") and protocols <= set(PUBLIC[app]):
                continue
            if (
                selector.get("matchLabels") == MEDIA_LABELS
                and rule.get("ports")
                and protocols == {"UDP"}
            ):
                continue
            problems.append(f"{_where(policy)}: reachable from outside, {selector or 'every pod'}")
    return problems


def _check_probes_and_budgets(docs: list[dict[str, Any]]) -> list[str]:
    problems = []
    budgets = [d["spec"]["selector"] for d in docs if d.get("kind") == "PodDisruptionBudget"]
    workloads = [d for d in docs if d.get("kind") in ("Deployment", "StatefulSet")]
    for doc in workloads:
        labels = doc["spec"]["template"]["metadata"]["labels"]
        if not any(_selects(b, labels) for b in budgets):
            problems.append(f"{_where(doc)}: no PodDisruptionBudget")
        for container in doc["spec"]["template"]["spec"]["containers"]:
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in container:
                    problems.append(f"{_where(doc)}/{container['name']}: no {probe}")
    for what, labels in (("ray head", HEAD_LABELS), ("media group", MEDIA_LABELS)):
        if not any(_selects(b, labels) and b.get("matchLabels") for b in budgets):
            problems.append(f"{what}: no PodDisruptionBudget")
    return problems


def _environment(container: Mapping[str, Any], config: Mapping[str, str]) -> dict[str, str]:
    """What a container's process would see: its ConfigMap, its env with `$(VAR)` expanded,
    a strong stand-in for each secret and 10.0.0.1 for each field reference."""
    import base64
    import hashlib
    import re

    env: dict[str, str] = {}
    if any("configMapRef" in s for s in container.get("envFrom") or []):
        env.update(config)
    for entry in container.get("env") or []:
        source = entry.get("valueFrom") or {}
        if "secretKeyRef" in source:
            if source["secretKeyRef"].get("optional"):
                continue
            seed = hashlib.sha256(entry["name"].encode()).digest()
            value = base64.urlsafe_b64encode(seed).decode()
        elif "fieldRef" in source:
            value = "10.0.0.1"
        else:
            value = re.sub(
                r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), entry["value"]
            )
        env[entry["name"]] = value
    return env


def _check_settings(docs: list[dict[str, Any]], cluster: Mapping[str, Any]) -> list[str]:
    """The gateway's environment makes a production Settings (every name real, no value
    refused); with a media pod's own variables on top, too."""
    (config,) = [d.get("data") or {} for d in docs if d.get("kind") == "ConfigMap"]
    gateways = [
        c for d, _, c in regions.iter_containers(docs) if d["metadata"]["name"] == "examday-gateway"
    ]
    if not gateways:
        return ["gateway: no Deployment"]
    gateway_env = _environment(gateways[0], config)
    trials = {"gateway": gateway_env}
    for group in cluster["spec"].get("workerGroupSpecs") or []:
        if "media" in group_resources(group):
            for container in group["template"]["spec"]["containers"]:
                node = {
                    k: v
                    for k, v in _environment(container, config).items()
                    if k.startswith("EXAMDAY_")
                }
                trials[f"{group['groupName']} pod"] = gateway_env | node
    # In a child process: Settings reads os.environ, which this process does not change.
    done = subprocess.run(
        [sys.executable, "-c", _SETTINGS_PROBE],
        input=json.dumps(trials),
        env={k: v for k, v in os.environ.items() if not k.startswith("EXAMDAY_")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        return [f"settings: the probe failed: {done.stderr[-500:]}"]
    problems = []
    for name, outcome in json.loads(done.stdout).items():
        if outcome != "production":
            problems.append(f"settings of the {name}: {outcome}")
    return problems


# Builds Settings from each environment it is given (JSON on stdin: name -> env).
_SETTINGS_PROBE = """
import json, os, sys
from infra.settings import Settings
trials = json.load(sys.stdin)
base = dict(os.environ)
found = {}
for name, env in trials.items():
    os.environ.clear()
    os.environ.update(base | env)
    try:
        found[name] = Settings().env
    except ValueError as exc:
        found[name] = str(exc)
print(json.dumps(found))
"""


def validate_regions(crd_path: Path) -> dict[str, list[str]]:
    """Each region's rendered manifests: Kubernetes schemas, the CRD, our rules."""
    required = actor_resources()
    schema = crd_schema(crd_path)
    found = {}
    for name, region in sorted(regions.REGIONS.items()):
        docs = regions.render(region)
        found[f"regions/{name}"] = check_kubernetes(docs, schema, required) + check_region(docs)
    return found


def validate_all(crd_path: Path) -> dict[str, list[str]]:
    """Every manifest in the repository, by file, and every region's rendering."""
    required = actor_resources()
    schema = crd_schema(crd_path)
    return {
        str(LAUNCHER.relative_to(MANIFESTS)): check_launcher(load_yaml(LAUNCHER), required),
        str(RAYCLUSTER.relative_to(MANIFESTS)): check_raycluster(
            load_yaml(RAYCLUSTER), schema, required
        ),
        str(GATEWAY.relative_to(MANIFESTS)): check_gateway(load_all(GATEWAY)),
        **validate_regions(crd_path),
    }
