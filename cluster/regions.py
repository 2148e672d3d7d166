"""One deployment per region, rendered from the KubeRay manifests (cluster/manifests/kuberay/).

    python -m cluster.regions list
    python -m cluster.regions render --region cn-north [--image-tag 0.1.0] > cn-north.yaml
    kubectl apply -f cn-north.yaml        # after the Secrets of `secrets_needed` exist

A small Python renderer rather than kustomize overlays: the objects it adds (the media
group's host ports, the secrets each component reads, the NetworkPolicies) follow from
values that live in Python already (the settings' names, the Ray ports), the output is
checked by the same code in the tests (`cluster/validate.py`, Kubernetes schemas and our
rules), and nothing but this package is needed to produce it.

Each region (namespace `examday-<region>`) gets its own Redis, bucket endpoint, TURN
server and Ray cluster:

- gateway (Deployment, Service, HPA, PDB): the only component that reads the platform's
  keys (token signing, data master, pseudonym, update and audit signing, metrics token),
  each from a Secret key by name. Each gateway pod joins the Ray cluster as a node that
  takes no work (`ray start --address=<head>:6379 --num-cpus=0 --resources='{"gateway":
  1}'`) and the gateway is a driver on it: no Ray Client (`ray://`, port 10001) on the
  request path;
- RayCluster: head (no workload, dashboard on 127.0.0.1), `cpu` (room shards, ingest),
  `media` (media shards; host ports for their UDP sockets, announced address from the
  node), `gpu` (face); Ray token authentication on every Ray container, the autoscaler and
  the gateway (a Ray node too), none of them with any other Secret;
- Redis (StatefulSet, append-only file, no eviction, password from a Secret, PDB);
- coturn (Deployment on the host network, TURN REST shared secret from a Secret, UDP/TCP
  3478 and a relay port range, relaying only to the node and pod networks, PDB);
- NetworkPolicies: deny by default; from outside only the gateway (HTTP), TURN and the
  media shards' UDP ports; Ray's ports (dashboard 8265, GCS 6379, client 10001, the rest)
  only among the Ray nodes: Ray pods and gateway pods (a driver is called back by the
  actors it calls, so the gateways' ports are open to the Ray pods too); Redis from the
  gateway and Ray pods.

The repository holds no Secret values: `secrets_needed` lists what to create (the header
of the rendered file says how).

Two things the manifests cannot do alone: actors get their Settings from the process that
creates them (the gateway), secrets included, so keeping keys out of Ray pods' environment
does not keep them out of the actors; and a media shard takes its settings from there too,
so the per-node EXAMDAY_MEDIA__ANNOUNCED_ADDRESSES of the media pods counts only once the
shard reads its own node's environment (today it binds its Ray node's address,
`use_node_address`, and announces `media.announced_addresses` of the gateway's settings).
"""

from __future__ import annotations

import argparse
import copy
import ipaddress
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml

MANIFESTS = Path(__file__).parent / "manifests"
RAYCLUSTER = MANIFESTS / "kuberay" / "raycluster.yaml"
GATEWAY = MANIFESTS / "kuberay" / "gateway.yaml"
IMAGE = "ghcr.io/examday/examday"
GPU_IMAGE = "ghcr.io/examday/examday-gpu"
REDIS_IMAGE = "redis:7.4.2"
COTURN_IMAGE = "coturn/coturn:4.6.3"

CLUSTER = "examday"  # the RayCluster's name; KubeRay's head Service is <name>-head-svc
GATEWAY_PORT = 8000
REDIS_PORT = 6379
TURN_PORT = 3478
# The Ray ports that must never be reachable from outside the Ray pods (the head's).
RAY_DASHBOARD_PORT = 8265
RAY_GCS_PORT = 6379
RAY_CLIENT_PORT = 10001
# The gateway pods' Ray node: a resource no actor asks for, so that it takes no work.
GATEWAY_RESOURCE = "gateway"
RAY_TOKEN_ENV = "RAY_AUTH_TOKEN"  # noqa: S105 (a variable name, not a value)

# KubeRay's labels on every Ray pod.
RAY_CLUSTER_LABEL = "ray.io/cluster"
RAY_NODE_TYPE_LABEL = "ray.io/node-type"
RAY_GROUP_LABEL = "ray.io/group"


@dataclass(frozen=True)
class SecretKey:
    """One key of a Secret created out of band, and the environment variable it fills."""

    secret: str
    key: str
    env: str
    optional: bool = False
    # How to make one (`openssl rand ...`), or None where a provider issues it.
    make: str | None = "openssl rand -hex 32"


_KEY_SEED = "openssl rand 32 | basenc --base64url"
# What each component reads, and nothing else (infra/settings: which code reads which key).
RAY_TOKEN = SecretKey("examday-ray-token", "auth_token", RAY_TOKEN_ENV)
REDIS_PASSWORD = SecretKey("examday-redis", "password", "REDIS_PASSWORD")
TURN_SECRET = SecretKey("examday-turn", "shared-secret", "EXAMDAY_TURN__SHARED_SECRET")
TURN_SECRET_FOR_COTURN = SecretKey("examday-turn", "shared-secret", "TURN_SHARED_SECRET")
GATEWAY_KEYS = (
    # Session tokens (actors/accounts/sessions.py, in the gateway).
    SecretKey("examday-gateway-keys", "token-signing-key", "EXAMDAY_TOKEN_SIGNING_KEY"),
    # Wraps each exam's data key (infra/keyring.py).
    SecretKey("examday-gateway-keys", "data-master-key", "EXAMDAY_DATA_MASTER_KEY", make=_KEY_SEED),
    SecretKey(
        "examday-gateway-keys",
        "data-master-keys-previous",
        "EXAMDAY_DATA_MASTER_KEYS_PREVIOUS",
        optional=True,
        make=None,
    ),
    # Candidate ids and device pseudonyms (core/exams.py, infra/pseudonym.py).
    SecretKey("examday-gateway-keys", "pseudonym-key", "EXAMDAY_PSEUDONYM_KEY"),
    # Ed25519 seeds: update manifests (actors/updates/signing.py), audit entries.
    SecretKey(
        "examday-gateway-keys", "update-signing-key", "EXAMDAY_UPDATE_SIGNING_KEY", make=_KEY_SEED
    ),
    SecretKey(
        "examday-gateway-keys", "audit-signing-key", "EXAMDAY_AUDIT_SIGNING_KEY", make=_KEY_SEED
    ),
    SecretKey("examday-gateway-keys", "metrics-token", "EXAMDAY_OPS__METRICS_TOKEN"),
)
# The keys that only the gateway may hold: no Ray pod (head, worker, media) reads them.
GATEWAY_ONLY_ENV = frozenset(key.env for key in GATEWAY_KEYS)


@dataclass(frozen=True)
class Region:
    """What differs between regions. The addresses are placeholders to set per deployment."""

    name: str
    # Where candidates and staff load the pages (EXAMDAY_PUBLIC_ORIGINS).
    public_origin: str
    # The region's object store (EXAMDAY_REGIONS__<name>__*); its keys are in a Secret.
    bucket_endpoint: str
    bucket: str
    signing_region: str
    # The name clients reach this region's TURN servers by (DNS to the TURN nodes).
    turn_host: str
    # The nodes' network (where media shards are announced) and the pods' (the address a
    # media shard binds): the only peers TURN relays to.
    node_network: str
    pod_network: str
    # The ingress / load balancer networks whose X-Forwarded-For the gateway believes.
    trusted_proxies: tuple[str, ...]
    relay_min_port: int = 49160
    relay_max_port: int = 49359
    # Each media shard takes one UDP port of media_udp_port .. + media_udp_span - 1 on its
    # node (host ports), so a media pod carries media_udp_span shards at most.
    media_udp_port: int = 50000
    media_udp_span: int = 4

    @property
    def namespace(self) -> str:
        return f"examday-{self.name}"

    @property
    def turn_urls(self) -> tuple[str, ...]:
        where = f"{self.turn_host}:{TURN_PORT}"
        return (f"turn:{where}?transport=udp", f"turn:{where}?transport=tcp")


REGIONS = {
    region.name: region
    for region in (
        Region(
            name="cn-north",
            public_origin="https://exam-cn-north.examday.example",
            bucket_endpoint="https://s3.cn-north.examday.example",
            bucket="examday-cn-north",
            signing_region="cn-north-1",
            turn_host="turn-cn-north.examday.example",
            node_network="10.16.0.0/14",
            pod_network="10.128.0.0/14",
            trusted_proxies=("10.16.0.0/14",),
        ),
        Region(
            name="cn-east",
            public_origin="https://exam-cn-east.examday.example",
            bucket_endpoint="https://s3.cn-east.examday.example",
            bucket="examday-cn-east",
            signing_region="cn-east-1",
            turn_host="turn-cn-east.examday.example",
            node_network="10.32.0.0/14",
            pod_network="10.132.0.0/14",
            trusted_proxies=("10.32.0.0/14",),
        ),
    )
}


def project_version() -> str:
    try:
        return version("examday")
    except PackageNotFoundError:  # pragma: no cover - only from an uninstalled checkout
        return "0.1.0"


# -- small builders ------------------------------------------------------------------


def _load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if isinstance(doc, dict)]


def _secret_env(key: SecretKey) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": key.secret, "key": key.key}
    if key.optional:
        ref["optional"] = True
    return {"name": key.env, "valueFrom": {"secretKeyRef": ref}}


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _ray_auth_env() -> list[dict[str, Any]]:
    """Ray token authentication (Ray >= 2.52): every Ray process and every client of the
    cluster carries the same token; RAY_AUTH_MODE must be the same on every node."""
    return [{"name": "RAY_AUTH_MODE", "value": "token"}, _secret_env(RAY_TOKEN)]


def _labels(region: Region) -> dict[str, str]:
    return {"app.kubernetes.io/part-of": "examday", "examday.io/region": region.name}


def _meta(region: Region, name: str, **labels: str) -> dict[str, Any]:
    return {"name": name, "namespace": region.namespace, "labels": _labels(region) | labels}


def _pdb(region: Region, name: str, selector: dict[str, str], **budget: Any) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(region, name),
        "spec": {"selector": {"matchLabels": selector}, **budget},
    }


def _policy(
    region: Region, name: str, selector: dict[str, Any], ingress: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(region, name),
        "spec": {"podSelector": selector, "policyTypes": ["Ingress"], "ingress": ingress},
    }


ANYWHERE = [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}]
RAY_PODS = {"podSelector": {"matchLabels": {RAY_CLUSTER_LABEL: CLUSTER}}}
GATEWAY_PODS = {"podSelector": {"matchLabels": {"app": "examday-gateway"}}}


# -- the components --------------------------------------------------------------------


def config_map(region: Region) -> dict[str, Any]:
    """The gateway's settings (the base ConfigMap's), for this region's store and TURN."""
    (base,) = [d for d in _load_all(GATEWAY) if d["kind"] == "ConfigMap"]
    doc = copy.deepcopy(base)
    doc["metadata"] = _meta(region, "examday-config")
    prefix = f"EXAMDAY_REGIONS__{region.name}__"
    doc["data"].update(
        {
            # The GCS: the gateway is a driver on its pod's own Ray node (never ray://).
            "EXAMDAY_RAY_ADDRESS": f"{CLUSTER}-head-svc:{RAY_GCS_PORT}",
            "EXAMDAY_PUBLIC_ORIGINS": json.dumps([region.public_origin]),
            "EXAMDAY_TRUSTED_PROXIES": json.dumps(list(region.trusted_proxies)),
            # Only this region's store (the nested names replace the default map).
            f"{prefix}endpoint": region.bucket_endpoint,
            f"{prefix}bucket": region.bucket,
            f"{prefix}signing_region": region.signing_region,
            "EXAMDAY_INGEST__DEFAULT_REGION": region.name,
            "EXAMDAY_UPDATES__INSTALLER_REGION": region.name,
            # Clients get this region's TURN servers with REST credentials.
            "EXAMDAY_TURN__EMBEDDED": "false",
            "EXAMDAY_TURN__URLS": json.dumps(list(region.turn_urls)),
            "EXAMDAY_TURN__RELAY_MIN_PORT": str(region.relay_min_port),
            "EXAMDAY_TURN__RELAY_MAX_PORT": str(region.relay_max_port),
            # Media shards bind their Ray node's (pod's) address, one UDP port each from
            # the span the media pods publish as host ports; the address they announce is
            # their node's (the media pods' EXAMDAY_MEDIA__ANNOUNCED_ADDRESSES).
            "EXAMDAY_MEDIA__USE_NODE_ADDRESS": "true",
            "EXAMDAY_MEDIA__UDP_PORT": str(region.media_udp_port),
            "EXAMDAY_MEDIA__UDP_PORT_SPAN": str(region.media_udp_span),
            # Candidates reach the shards from anywhere (directly or through TURN).
            "EXAMDAY_MEDIA__ALLOWED_REMOTE_NETWORKS": json.dumps(["0.0.0.0/0", "::/0"]),
        }
    )
    return doc


def gateway(region: Region, tag: str) -> list[dict[str, Any]]:
    docs = [copy.deepcopy(d) for d in _load_all(GATEWAY) if d["kind"] != "ConfigMap"]
    for doc in docs:
        doc["metadata"] = _meta(region, doc["metadata"]["name"], app="examday-gateway")
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    container["image"] = f"{IMAGE}:{tag}"
    # Settings from the ConfigMap; each secret by name, never a whole Secret (envFrom).
    container["envFrom"] = [{"configMapRef": {"name": "examday-config"}}]
    store = f"EXAMDAY_REGIONS__{region.name}__"
    # The base's own variables (POD_IP, the Ray node's address) come first.
    container["env"] = [
        *(
            e
            for e in container.get("env") or []
            if e["name"] not in ("RAY_AUTH_MODE", RAY_TOKEN_ENV)
        ),
        *_ray_auth_env(),
        _secret_env(REDIS_PASSWORD),
        {
            "name": "EXAMDAY_REDIS_URL",
            "value": f"redis://:$(REDIS_PASSWORD)@examday-redis:{REDIS_PORT}/0",
        },
        _secret_env(SecretKey("examday-s3", "access-key", f"{store}access_key", make=None)),
        _secret_env(SecretKey("examday-s3", "secret-key", f"{store}secret_key", make=None)),
        _secret_env(TURN_SECRET),
        *(_secret_env(key) for key in GATEWAY_KEYS),
    ]
    deployment["spec"]["template"]["metadata"]["labels"]["examday.io/region"] = region.name
    return [*docs, _pdb(region, "examday-gateway", {"app": "examday-gateway"}, maxUnavailable=1)]


def _ray_container(container: dict[str, Any], image: str) -> None:
    container["image"] = image
    # Non-secret settings only (RAY_worker_niceness among them); actors get the rest from
    # the gateway that creates them.
    container["envFrom"] = [{"configMapRef": {"name": "examday-config"}}]
    container["env"] = [
        e for e in container.get("env", []) if e["name"] not in ("RAY_AUTH_MODE", RAY_TOKEN_ENV)
    ] + _ray_auth_env()


def raycluster(region: Region, tag: str) -> list[dict[str, Any]]:
    doc = copy.deepcopy(yaml.safe_load(RAYCLUSTER.read_text()))
    doc["metadata"] = _meta(region, CLUSTER, **{"app.kubernetes.io/name": "examday"})
    spec = doc["spec"]
    spec["autoscalerOptions"]["env"] = _ray_auth_env()
    head = spec["headGroupSpec"]
    # The dashboard (and its job API) only on the pod's loopback: `kubectl port-forward`.
    head["rayStartParams"]["dashboard-host"] = "127.0.0.1"
    head["serviceType"] = "ClusterIP"
    for container in head["template"]["spec"]["containers"]:
        _ray_container(container, f"{IMAGE}:{tag}")
    groups = {group["groupName"]: group for group in spec["workerGroupSpecs"]}
    cpu, gpu = groups["cpu"], groups["gpu"]
    media = copy.deepcopy(cpu)
    # Room shards and ingest on `cpu`; media shards on `media`, where their ports are.
    resources = json.loads(json.loads(cpu["rayStartParams"]["resources"]))
    resources.pop("media")
    cpu["rayStartParams"]["resources"] = json.dumps(json.dumps(resources))
    media["groupName"] = "media"
    media["rayStartParams"]["resources"] = json.dumps(json.dumps({"media": region.media_udp_span}))
    for group in (cpu, media):
        for container in group["template"]["spec"]["containers"]:
            _ray_container(container, f"{IMAGE}:{tag}")
    for container in gpu["template"]["spec"]["containers"]:
        _ray_container(container, f"{GPU_IMAGE}:{tag}")
    (container,) = media["template"]["spec"]["containers"]
    container["ports"] = [
        {"name": f"rtc-{i}", "containerPort": port, "hostPort": port, "protocol": "UDP"}
        for i, port in enumerate(
            range(region.media_udp_port, region.media_udp_port + region.media_udp_span)
        )
    ]
    container["env"] += [
        _field_env("HOST_IP", "status.hostIP"),
        # What this node's media shards put in their ICE candidates: the node's address,
        # where the host ports receive. Replace with the node's public address where the
        # nodes are behind a 1:1 NAT (a per-node value, e.g. from a node label).
        {"name": "EXAMDAY_MEDIA__ANNOUNCED_ADDRESSES", "value": '["$(HOST_IP)"]'},
    ]
    spec["workerGroupSpecs"] = [cpu, media, gpu]
    return [
        doc,
        _pdb(
            region,
            "examday-ray-head",
            {RAY_CLUSTER_LABEL: CLUSTER, RAY_NODE_TYPE_LABEL: "head"},
            minAvailable=1,
        ),
        # A drained media node sends its rooms a `reconnect`: one at a time.
        _pdb(
            region,
            "examday-ray-media",
            {RAY_CLUSTER_LABEL: CLUSTER, RAY_GROUP_LABEL: "media"},
            maxUnavailable=1,
        ),
    ]


# docs/operations.md: append-only file fsynced every second, no RDB snapshots, no eviction
# (an evicted journal or data key is a lost one).
REDIS_ARGS = [
    *("--appendonly", "yes", "--appendfsync", "everysec", "--save", ""),
    *("--maxmemory-policy", "noeviction", "--requirepass", "$(REDIS_PASSWORD)", "--dir", "/data"),
]


def redis(region: Region) -> list[dict[str, Any]]:
    labels = {"app": "examday-redis"}
    ping = 'redis-cli --no-auth-warning -a "$REDIS_PASSWORD" ping | grep -q PONG'
    container = {
        "name": "redis",
        "image": REDIS_IMAGE,
        "args": REDIS_ARGS,
        "env": [_secret_env(REDIS_PASSWORD)],
        "ports": [{"name": "redis", "containerPort": REDIS_PORT}],
        "readinessProbe": {"exec": {"command": ["sh", "-c", ping]}, "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 10},
        "resources": {
            "requests": {"cpu": "2", "memory": "16Gi"},
            "limits": {"cpu": "2", "memory": "16Gi"},
        },
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(region, "examday-redis", **labels),
            "spec": {"selector": labels, "ports": [{"name": "redis", "port": REDIS_PORT}]},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": _meta(region, "examday-redis", **labels),
            "spec": {
                "serviceName": "examday-redis",
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [container]},
                },
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "data"},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "100Gi"}},
                        },
                    }
                ],
            },
        },
        # One Redis: an eviction waits for an operator (move it between exams).
        _pdb(region, "examday-redis", labels, minAvailable=1),
    ]


def turn(region: Region) -> list[dict[str, Any]]:
    labels = {"app": "examday-turn"}
    peers = [ipaddress.ip_network(n) for n in (region.node_network, region.pod_network)]
    container = {
        "name": "coturn",
        "image": COTURN_IMAGE,
        "args": [
            "-n",  # no config file: everything is here
            f"--listening-port={TURN_PORT}",
            "--external-ip=$(HOST_IP)",
            f"--realm=examday-{region.name}",
            # TURN REST credentials (infra/turn.py mints them in the gateway).
            "--use-auth-secret",
            "--static-auth-secret=$(TURN_SHARED_SECRET)",
            f"--min-port={region.relay_min_port}",
            f"--max-port={region.relay_max_port}",
            # Relay UDP to the media shards' nodes and pods only: never an open proxy.
            "--no-tcp-relay",
            "--no-multicast-peers",
            "--denied-peer-ip=0.0.0.0-255.255.255.255",
            "--denied-peer-ip=::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            *(f"--allowed-peer-ip={network[0]}-{network[-1]}" for network in peers),
            "--no-cli",
            "--fingerprint",
            "--log-file=stdout",
        ],
        "env": [_field_env("HOST_IP", "status.hostIP"), _secret_env(TURN_SECRET_FOR_COTURN)],
        "ports": [
            {"name": "turn-udp", "containerPort": TURN_PORT, "protocol": "UDP"},
            {"name": "turn-tcp", "containerPort": TURN_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {"tcpSocket": {"port": TURN_PORT}, "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": TURN_PORT}, "periodSeconds": 10},
        "resources": {
            "requests": {"cpu": "2", "memory": "1Gi"},
            "limits": {"cpu": "4", "memory": "2Gi"},
        },
    }
    pod_spec = {
        # The relay ports are the node's own: clients send to <node>:<relay port>.
        "hostNetwork": True,
        "dnsPolicy": "ClusterFirstWithHostNet",
        "nodeSelector": {"examday.io/turn": "true"},
        "affinity": {
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "labelSelector": {"matchLabels": labels},
                        "topologyKey": "kubernetes.io/hostname",
                    }
                ]
            }
        },
        "containers": [container],
    }
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta(region, "examday-turn", **labels),
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": pod_spec},
            },
        },
        _pdb(region, "examday-turn", labels, maxUnavailable=1),
    ]


def network_policies(region: Region) -> list[dict[str, Any]]:
    def ports(*numbers: int, protocol: str = "TCP") -> list[dict[str, Any]]:
        return [{"port": n, "protocol": protocol} for n in numbers]

    last = region.media_udp_port + region.media_udp_span - 1
    media_ports = [{"port": region.media_udp_port, "endPort": last, "protocol": "UDP"}]
    relay = [{"port": region.relay_min_port, "endPort": region.relay_max_port, "protocol": "UDP"}]
    return [
        # Nothing reaches a pod of the namespace unless a policy below lets it.
        _policy(region, "default-deny-ingress", {}, []),
        _policy(
            region,
            "gateway-from-anywhere",
            {"matchLabels": {"app": "examday-gateway"}},
            [{"from": ANYWHERE, "ports": ports(GATEWAY_PORT)}],
        ),
        # coturn runs on the host network, where most network plugins do not apply policies:
        # open 3478 and the relay range in the nodes' firewall as well.
        _policy(
            region,
            "turn-from-anywhere",
            {"matchLabels": {"app": "examday-turn"}},
            [
                {
                    "from": ANYWHERE,
                    "ports": [
                        *ports(TURN_PORT, protocol="UDP"),
                        *ports(TURN_PORT),
                        *relay,
                    ],
                }
            ],
        ),
        # Ray: every port among the Ray nodes, which are the Ray pods and the gateway pods
        # (GCS, raylets, object managers, workers, and the drivers' own ports, which the
        # actors they call answer to). Dashboard 8265, GCS 6379 and the client port 10001
        # from nowhere else.
        _policy(
            region,
            "ray-internal",
            {"matchLabels": {RAY_CLUSTER_LABEL: CLUSTER}},
            [{"from": [RAY_PODS, GATEWAY_PODS]}],
        ),
        _policy(
            region,
            "ray-node-gateway",
            {"matchLabels": {"app": "examday-gateway"}},
            [{"from": [RAY_PODS, GATEWAY_PODS]}],
        ),
        # Candidates' and proctors' media, straight to the media shards' UDP sockets.
        _policy(
            region,
            "media-udp-from-anywhere",
            {"matchLabels": {RAY_CLUSTER_LABEL: CLUSTER, RAY_GROUP_LABEL: "media"}},
            [{"from": ANYWHERE, "ports": media_ports}],
        ),
        _policy(
            region,
            "redis-from-gateway-and-ray",
            {"matchLabels": {"app": "examday-redis"}},
            [{"from": [GATEWAY_PODS, RAY_PODS], "ports": ports(REDIS_PORT)}],
        ),
    ]


def render(region: Region, tag: str | None = None) -> list[dict[str, Any]]:
    """Every object of one region, in the order `kubectl apply` wants them."""
    tag = tag or project_version()
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": region.namespace, "labels": _labels(region)},
    }
    return [
        namespace,
        config_map(region),
        *redis(region),
        *turn(region),
        *raycluster(region, tag),
        *gateway(region, tag),
        *network_policies(region),
    ]


def secrets_needed(docs: Sequence[dict[str, Any]]) -> dict[str, set[str]]:
    """Secret name -> the keys the rendered objects read from it."""
    needed: dict[str, set[str]] = {}
    for _, env in iter_env(docs):
        ref = (env.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            needed.setdefault(ref["name"], set()).add(ref["key"])
    return needed


def iter_env(docs: Sequence[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(owner, env entry) for every container of every object (owner: `Kind/name[/group]`)."""
    found: list[tuple[str, dict[str, Any]]] = []
    for _, owner, container in iter_containers(docs):
        found += [(owner, env) for env in container.get("env") or []]
    return found


def iter_containers(
    docs: Sequence[dict[str, Any]],
) -> list[tuple[dict[str, Any], str, dict[str, Any]]]:
    """(object, owner, container) of Deployments, StatefulSets and the RayCluster (its
    head, each worker group and the autoscaler sidecar)."""
    found: list[tuple[dict[str, Any], str, dict[str, Any]]] = []
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in ("Deployment", "StatefulSet"):
            for c in doc["spec"]["template"]["spec"]["containers"]:
                found.append((doc, name, c))
        if doc["kind"] == "RayCluster":
            spec = doc["spec"]
            for c in spec["headGroupSpec"]["template"]["spec"]["containers"]:
                found.append((doc, f"{name}/head", c))
            for group in spec.get("workerGroupSpecs") or []:
                for c in group["template"]["spec"]["containers"]:
                    found.append((doc, f"{name}/{group['groupName']}", c))
            found.append((doc, f"{name}/autoscaler", spec.get("autoscalerOptions") or {}))
    return found


def header(region: Region, docs: Sequence[dict[str, Any]]) -> str:
    lines = [
        f"# examday, region {region.name}: rendered by `python -m cluster.regions render"
        f" --region {region.name}`; do not edit, change cluster/regions.py.",
        "# The Secrets are not here. Create them first, in the namespace (after creating it):",
    ]
    makers = {
        (key.secret, key.key): key.make
        for key in (RAY_TOKEN, REDIS_PASSWORD, TURN_SECRET, *GATEWAY_KEYS)
    }
    optional = {(key.secret, key.key) for key in GATEWAY_KEYS if key.optional}
    for secret, keys in sorted(secrets_needed(docs).items()):
        literals = " ".join(
            f"--from-literal={key}=$({makers[(secret, key)]})"
            if makers.get((secret, key))
            else f"--from-literal={key}=..."
            for key in sorted(keys)
            if (secret, key) not in optional
        )
        lines.append(f"#   kubectl -n {region.namespace} create secret generic {secret} {literals}")
    lines += [
        f"# Optional: {secret} key {key} (old master keys, after `examday keys rotate` begins)."
        for secret, key in sorted(optional)
    ]
    return "\n".join(lines) + "\n"


def dump(region: Region, tag: str | None = None) -> str:
    docs = render(region, tag)
    return header(region, docs) + yaml.safe_dump_all(docs, sort_keys=False, width=100)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.regions", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the regions, one a line")
    render_ = commands.add_parser("render", help="one region's manifests, to standard output")
    render_.add_argument("--region", required=True, choices=sorted(REGIONS))
    render_.add_argument("--image-tag", default=None, help="image tag (the project's version)")
    args = parser.parse_args(argv)
    if args.command == "list":
        print("\n".join(sorted(REGIONS)))
        return 0
    sys.stdout.write(dump(REGIONS[args.region], args.image_tag))
    return 0


if __name__ == "__main__":
    sys.exit(main())
