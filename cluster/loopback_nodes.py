"""Ray's autoscaler on one machine: a node provider whose nodes are `ray start` processes on
the loopback addresses of `examday up` (127.0.0.3, .4), for `examday up --autoscale`.

Ray ships a provider for this, `fake_multinode` (`FakeMultiNodeProvider`), but its nodes
take the address Ray finds for the machine (the eth0 address here: traffic off loopback)
and the memory Ray detects; it is private API (`ray.autoscaler._private`), and its example
config is not in the wheel. This one is the same idea on Ray's public `NodeProvider`: each
node is `infra.services.ray_node_process` (a pinned loopback address and port block,
explicit `--memory` and `--object-store-memory`) with the resources of its node type from
the autoscaling config, which are the KubeRay worker groups' (`autoscaling_config`).

The autoscaler (Ray's monitor process on the head) imports this module by its path
(`provider.type: external`) and reads the stack's settings from the environment the head
was started with.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from ray.autoscaler.node_provider import NodeProvider
from ray.autoscaler.tags import (
    NODE_KIND_HEAD,
    NODE_KIND_WORKER,
    STATUS_UP_TO_DATE,
    TAG_RAY_NODE_KIND,
    TAG_RAY_NODE_NAME,
    TAG_RAY_NODE_STATUS,
    TAG_RAY_USER_NODE_TYPE,
)

from infra import services
from infra.processes import ManagedProcess, port_open
from infra.settings import Settings

HEAD_TYPE = "ray.head.default"
HEAD_ID = "loopback-0"
MODULE = f"{__name__}.LoopbackNodeProvider"


def autoscaling_config(
    settings: Settings,
    worker_types: dict[str, dict[str, Any]],
    head_resources: dict[str, float],
    *,
    idle_timeout_s: float,
) -> dict[str, Any]:
    """A cluster config for `ray start --head --autoscaling-config` (Ray's v1 autoscaler):
    `worker_types` name -> {resources, min_workers, max_workers}; at most as many workers
    in all as `examday up` has loopback addresses for."""
    return {
        "cluster_name": "examday-local",
        "max_workers": services.MAX_LOOPBACK_WORKERS,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_s / 60,
        "provider": {
            "type": "external",
            "module": MODULE,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "auth": {"ssh_user": "examday"},
        "available_node_types": {
            HEAD_TYPE: {"resources": head_resources, "node_config": {}, "max_workers": 0},
            **{name: {"node_config": {}, **spec} for name, spec in worker_types.items()},
        },
        "head_node_type": HEAD_TYPE,
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


class LoopbackNodeProvider(NodeProvider):
    def __init__(self, provider_config: dict[str, Any], cluster_name: str) -> None:
        super().__init__(provider_config, cluster_name)
        self.settings = Settings()
        self.lock = threading.RLock()
        head_tags = {
            TAG_RAY_NODE_KIND: NODE_KIND_HEAD,
            TAG_RAY_USER_NODE_TYPE: HEAD_TYPE,
            TAG_RAY_NODE_NAME: HEAD_ID,
            TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE,
        }
        self.tags: dict[str, dict[str, str]] = {HEAD_ID: head_tags}
        self.processes: dict[str, ManagedProcess] = {}

    def non_terminated_nodes(self, tag_filters: dict[str, str]) -> list[str]:
        with self.lock:
            return [
                node
                for node, tags in self.tags.items()
                if all(tags.get(k) == v for k, v in tag_filters.items())
            ]

    def is_running(self, node_id: str) -> bool:
        with self.lock:
            return node_id in self.tags

    def is_terminated(self, node_id: str) -> bool:
        with self.lock:
            return node_id not in self.tags

    def node_tags(self, node_id: str) -> dict[str, str]:
        with self.lock:
            return dict(self.tags[node_id])

    def internal_ip(self, node_id: str) -> str:
        return services.ray_node_ip(self.settings, int(node_id.rsplit("-", 1)[1]))

    def external_ip(self, node_id: str) -> str:
        return self.internal_ip(node_id)

    def set_node_tags(self, node_id: str, tags: dict[str, str]) -> None:
        with self.lock:
            self.tags[node_id].update(tags)

    def create_node(
        self, node_config: dict[str, Any], tags: dict[str, str], count: int
    ) -> dict[str, Any] | None:
        return self.create_node_with_resources_and_labels(node_config, tags, count, {}, {})

    def create_node_with_resources_and_labels(
        self,
        node_config: dict[str, Any],
        tags: dict[str, str],
        count: int,
        resources: dict[str, float],
        labels: dict[str, str],
    ) -> dict[str, Any] | None:
        for _ in range(count):
            with self.lock:
                index = next(
                    i
                    for i in range(1, services.MAX_LOOPBACK_WORKERS + 1)
                    if f"loopback-{i}" not in self.tags
                )
                node_id = f"loopback-{index}"
                self.tags[node_id] = {
                    TAG_RAY_NODE_KIND: NODE_KIND_WORKER,
                    TAG_RAY_NODE_NAME: node_id,
                    TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE,
                    **tags,
                }
            custom = {k: v for k, v in resources.items() if k not in ("CPU", "GPU", "memory")}
            process = services.ray_node_process(
                self.settings,
                head=False,
                index=index,
                resources=custom,
                cpus=int(resources.get("CPU", 0)),
            )
            process.start()
            address = (
                services.ray_node_ip(self.settings, index),
                services.ray_node_port(self.settings, index),
            )
            process.wait_healthy(lambda where=address: port_open(*where), 60)  # type: ignore[misc]
            with self.lock:
                self.processes[node_id] = process
        return None

    def terminate_node(self, node_id: str) -> dict[str, Any] | None:
        with self.lock:
            self.tags.pop(node_id, None)
            process = self.processes.pop(node_id, None)
        if process is not None:
            process.stop()
        return None

    @staticmethod
    def bootstrap_config(cluster_config: dict[str, Any]) -> dict[str, Any]:
        return cluster_config


def local_config(settings: Settings, idle_timeout_s: float) -> dict[str, Any]:
    """`examday up --autoscale`: the head offers what the KubeRay `cpu` and `gpu` groups do
    (room shards, ingest, face), and media nodes come with demand, each offering what a
    KubeRay `media` pod does (`media`: one unit per UDP port of the region's span), one
    at least and as many as the stack has loopback addresses for."""
    from cluster import regions

    region = regions.REGIONS[min(regions.REGIONS)]
    cluster = regions.raycluster(region, regions.project_version())[0]
    (media,) = [g for g in cluster["spec"]["workerGroupSpecs"] if g["groupName"] == "media"]
    offered: dict[str, float] = json.loads(json.loads(media["rayStartParams"]["resources"]))
    head = {k: float(v) for k, v in services.NODE_RESOURCES.items() if k not in offered}
    worker = {"CPU": settings.ray_node_cpus, **offered}
    most = services.MAX_LOOPBACK_WORKERS
    types = {"media": {"resources": worker, "min_workers": 1, "max_workers": most}}
    head_resources = {"CPU": float(settings.ray_node_cpus), **head}
    return autoscaling_config(settings, types, head_resources, idle_timeout_s=idle_timeout_s)
