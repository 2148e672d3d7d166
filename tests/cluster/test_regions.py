"""Each region's deployment (cluster/regions.py) passes the Kubernetes schemas, KubeRay's CRD
and our rules; copies that break a rule are caught."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster import regions, validate

CRD = Path(__file__).parents[1] / "fixtures" / "kuberay" / "ray.io_rayclusters.yaml"
Docs = list[dict[str, Any]]


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return validate.crd_schema(CRD)


@pytest.fixture(scope="module")
def required() -> set[str]:
    return validate.actor_resources()


@pytest.fixture
def docs() -> Docs:
    return regions.render(regions.REGIONS["cn-north"])


def _one(docs: Docs, kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _cluster(docs: Docs) -> dict[str, Any]:
    return _one(docs, "RayCluster", regions.CLUSTER)


def _group(docs: Docs, name: str) -> dict[str, Any]:
    groups: list[dict[str, Any]] = _cluster(docs)["spec"]["workerGroupSpecs"]
    (group,) = [g for g in groups if g["groupName"] == name]
    return group


def _container(pod_owner: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = pod_owner["template"]["spec"]["containers"][0]
    return container


def test_every_region_renders_valid_manifests_that_keep_the_rules() -> None:
    assert set(regions.REGIONS) == {"cn-north", "cn-east"}
    assert validate.validate_regions(CRD) == {"regions/cn-east": [], "regions/cn-north": []}


def test_each_region_has_its_own_namespace_redis_bucket_and_turn() -> None:
    north, east = (regions.render(regions.REGIONS[name]) for name in ("cn-north", "cn-east"))
    configs = [_one(docs, "ConfigMap", "examday-config")["data"] for docs in (north, east)]
    assert (
        configs[0]["EXAMDAY_REGIONS__cn-north__endpoint"]
        != (configs[1]["EXAMDAY_REGIONS__cn-east__endpoint"])
    )
    assert "EXAMDAY_REGIONS__cn-east__endpoint" not in configs[0]
    assert configs[0]["EXAMDAY_TURN__URLS"] != configs[1]["EXAMDAY_TURN__URLS"]
    for docs, region in ((north, "cn-north"), (east, "cn-east")):
        assert {d["metadata"].get("namespace", d["metadata"]["name"]) for d in docs} == {
            f"examday-{region}"
        }
        assert _one(docs, "StatefulSet", "examday-redis")
        turn = _container(_one(docs, "Deployment", "examday-turn")["spec"])
        assert "--use-auth-secret" in turn["args"]
        assert {(p["containerPort"], p["protocol"]) for p in turn["ports"]} == {
            (3478, "UDP"),
            (3478, "TCP"),
        }
        assert any(a.startswith("--min-port=") for a in turn["args"])
        config = _one(docs, "ConfigMap", "examday-config")["data"]
        assert config["EXAMDAY_INGEST__DEFAULT_REGION"] == region


def test_only_the_gateway_reads_the_platform_keys(docs: Docs) -> None:
    readers: dict[str, set[str]] = {}
    for owner, env in regions.iter_env(docs):
        ref = (env.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            readers.setdefault(f"{ref['name']}/{ref['key']}", set()).add(owner.split("/")[1])
    assert readers["examday-gateway-keys/update-signing-key"] == {"examday-gateway"}
    assert readers["examday-gateway-keys/token-signing-key"] == {"examday-gateway"}
    assert readers["examday-gateway-keys/pseudonym-key"] == {"examday-gateway"}
    assert readers["examday-ray-token/auth_token"] == {"examday-gateway", regions.CLUSTER}
    assert readers["examday-turn/shared-secret"] == {"examday-gateway", "examday-turn"}
    assert not any(d["kind"] == "Secret" for d in docs)


def test_the_render_command_prints_the_objects_and_how_to_make_their_secrets() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert regions.main(["render", "--region", "cn-east", "--image-tag", "9.9.9"]) == 0
    text = out.getvalue()
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert docs == regions.render(regions.REGIONS["cn-east"], "9.9.9")
    assert _container(_group(docs, "gpu"))["image"] == "ghcr.io/examday/examday-gpu:9.9.9"
    for secret in regions.secrets_needed(docs):
        assert f"create secret generic {secret} " in text


# -- each rule, broken once ------------------------------------------------------------


def _update_key_on_a_worker(docs: Docs) -> None:
    _container(_group(docs, "cpu"))["env"].append(
        {
            "name": "EXAMDAY_UPDATE_SIGNING_KEY",
            "valueFrom": {"secretKeyRef": {"name": "examday-gateway-keys", "key": "update"}},
        }
    )


def _whole_secret_on_media(docs: Docs) -> None:
    _container(_group(docs, "media"))["envFrom"].append({"secretRef": {"name": "everything"}})


def _auth_off_on_the_head(docs: Docs) -> None:
    head = _container(_cluster(docs)["spec"]["headGroupSpec"])
    head["env"] = [e for e in head["env"] if e["name"] != "RAY_AUTH_MODE"]


def _dashboard_everywhere(docs: Docs) -> None:
    _cluster(docs)["spec"]["headGroupSpec"]["rayStartParams"]["dashboard-host"] = "0.0.0.0"


def _dashboard_open_to_the_world(docs: Docs) -> None:
    _one(docs, "NetworkPolicy", "ray-internal")["spec"]["ingress"].append(
        {"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 8265}]}
    )


def _no_policy_on_ray(docs: Docs) -> None:
    docs[:] = [d for d in docs if d["metadata"]["name"] != "ray-internal"]


def _gateway_through_ray_client(docs: Docs) -> None:
    config = _one(docs, "ConfigMap", "examday-config")["data"]
    config["EXAMDAY_RAY_ADDRESS"] = f"ray://{regions.CLUSTER}-head-svc:{regions.RAY_CLIENT_PORT}"


def _gateway_without_its_ray_node(docs: Docs) -> None:
    gateway = _container(_one(docs, "Deployment", "examday-gateway")["spec"])
    gateway["command"] = ["uvicorn", "api.app:create_app", "--factory"]


def _redis_open_to_the_world(docs: Docs) -> None:
    policy = _one(docs, "NetworkPolicy", "redis-from-gateway-and-ray")
    policy["spec"]["ingress"][0]["from"].append({"namespaceSelector": {}})


def _media_without_announced_address(docs: Docs) -> None:
    container = _container(_group(docs, "media"))
    container["env"] = [
        e for e in container["env"] if e["name"] != "EXAMDAY_MEDIA__ANNOUNCED_ADDRESSES"
    ]
    container["ports"] = container["ports"][:1]


def _turn_without_probe_or_budget(docs: Docs) -> None:
    del _container(_one(docs, "Deployment", "examday-turn")["spec"])["livenessProbe"]
    docs[:] = [d for d in docs if _key(d) != ("PodDisruptionBudget", "examday-turn")]


def _key(doc: dict[str, Any]) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def _open_relay(docs: Docs) -> None:
    turn = _container(_one(docs, "Deployment", "examday-turn")["spec"])
    turn["args"] = [a for a in turn["args"] if "peer-ip" not in a]


def _unknown_setting(docs: Docs) -> None:
    _one(docs, "ConfigMap", "examday-config")["data"]["EXAMDAY_MEDIA__NO_SUCH_KNOB"] = "1"


def _no_such_field(docs: Docs) -> None:
    _one(docs, "Deployment", "examday-turn")["spec"]["replica"] = 2
    _one(docs, "Service", "examday-redis")["spec"]["ports"][0]["port"] = "many"


BROKEN: list[tuple[Callable[[Docs], None], str]] = [
    (_update_key_on_a_worker, "RayCluster/examday/cpu: has EXAMDAY_UPDATE_SIGNING_KEY"),
    (_whole_secret_on_media, "RayCluster/examday/media: takes a whole Secret (everything)"),
    (_auth_off_on_the_head, "RayCluster/examday/head: RAY_AUTH_MODE is not token"),
    (_dashboard_everywhere, "ray head: the dashboard is not bound to 127.0.0.1"),
    (_dashboard_open_to_the_world, "NetworkPolicy/ray-internal: opens the Ray dashboard 8265"),
    (_no_policy_on_ray, "networkpolicy: none covers the Ray head (dashboard 8265, GCS, client)"),
    (_redis_open_to_the_world, "NetworkPolicy/redis-from-gateway-and-ray: reachable from outside"),
    (
        _gateway_through_ray_client,
        "Deployment/examday-gateway: EXAMDAY_RAY_ADDRESS is 'ray://examday-head-svc:10001'",
    ),
    (_gateway_without_its_ray_node, "Deployment/examday-gateway: does not start a Ray node"),
    (_media_without_announced_address, "media: media pods without EXAMDAY_MEDIA__ANNOUNCED"),
    (_media_without_announced_address, "media: 4 media shards, 1 UDP host ports"),
    (_turn_without_probe_or_budget, "Deployment/examday-turn/coturn: no livenessProbe"),
    (_turn_without_probe_or_budget, "Deployment/examday-turn: no PodDisruptionBudget"),
    (_open_relay, "turn: coturn without --denied-peer-ip=0.0.0.0-255.255.255.255"),
    (_open_relay, "turn: relays to no media shard"),
    (_unknown_setting, "settings of the gateway:"),
    (_no_such_field, "Deployment/examday-turn: kubernetes 1.33: spec: Additional properties"),
    (_no_such_field, "Service/examday-redis: kubernetes 1.33: spec/ports/0/port: 'many'"),
]


@pytest.mark.parametrize(("breaks", "problem"), BROKEN, ids=[p for _, p in BROKEN])
def test_a_broken_rule_is_found(
    docs: Docs,
    schema: dict[str, Any],
    required: set[str],
    breaks: Callable[[Docs], None],
    problem: str,
) -> None:
    """(The unbroken rendering passes both checks: the first test.)"""
    broken = copy.deepcopy(docs)
    breaks(broken)
    if "kubernetes 1.33" in problem:
        found = validate.check_kubernetes(broken, schema, required)
    else:
        found = validate.check_region(broken)
    assert any(p.startswith(problem) for p in found), found


def test_the_gateway_is_a_driver_on_a_ray_node_of_its_own_never_a_ray_client(
    docs: Docs,
) -> None:
    """Issue #24: no Ray Client on the request path. The gateway pod starts a Ray node that
    takes no work (no CPU, only the gateway resource, which no actor asks for) on the GCS
    address, with the Ray token, then the gateway as a driver on it; Ray pods and gateway
    pods reach each other's Ray ports (actors answer their driver), nothing else does."""
    rendered = regions.dump(regions.REGIONS["cn-north"])
    assert "ray://" not in rendered
    config = _one(docs, "ConfigMap", "examday-config")["data"]
    assert config["EXAMDAY_RAY_ADDRESS"] == f"{regions.CLUSTER}-head-svc:{regions.RAY_GCS_PORT}"
    gateway = _container(_one(docs, "Deployment", "examday-gateway")["spec"])
    command = " ".join(gateway["command"])
    node, driver = command.split(" && ")
    assert 'ray start --address="$EXAMDAY_RAY_ADDRESS" --node-ip-address="$POD_IP"' in node
    assert "--num-cpus=0 --num-gpus=0 --resources='{\"gateway\": 1}'" in node
    assert "--memory=" in node
    assert "--object-store-memory=" in node
    assert driver.split() == ["exec", "examday", "gateway", "--host", "0.0.0.0"]
    env = {e["name"]: e for e in gateway["env"]}
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    assert env[regions.RAY_TOKEN_ENV]["valueFrom"]["secretKeyRef"]["name"] == "examday-ray-token"
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    assert "ray-client-from-gateway" not in policies
    ray_nodes = [regions.RAY_PODS, regions.GATEWAY_PODS]
    assert policies["ray-internal"]["spec"]["ingress"] == [{"from": ray_nodes}]
    assert policies["ray-node-gateway"]["spec"]["podSelector"] == {
        "matchLabels": {"app": "examday-gateway"}
    }
    assert policies["ray-node-gateway"]["spec"]["ingress"] == [{"from": ray_nodes}]


def test_the_single_cluster_base_manifests_break_the_region_rules() -> None:
    """What the repository deployed before the regions: secrets for every Ray pod, the
    dashboard on every address, no token, no NetworkPolicy."""
    base = [*validate.load_all(validate.GATEWAY), validate.load_yaml(validate.RAYCLUSTER)]
    problems = validate.check_region(base)
    assert "ray head: the dashboard is not bound to 127.0.0.1" in problems
    assert "RayCluster/examday/head: takes a whole Secret (examday-secrets)" in problems
    assert "RayCluster/examday/gpu: RAY_AUTH_MODE is not token" in problems
    assert "networkpolicy: no default deny of ingress" in problems
    assert "media: no worker group offers 'media'" not in problems  # cpu offers it there
