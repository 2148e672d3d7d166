"""Where a new shard starts: on the live, undrained node that offers its plane's resource
and holds the fewest of the plane's shards.

Left to Ray's default scheduling, every shard landed on one node. That policy (hybrid)
keeps a task or actor on the node of the process that creates it while that node's most
used resource is below `scheduler_spread_threshold` (0.5), and shards ask for
`num_cpus=0` and one unit of a custom resource that a local node offers 1000 of
(`infra.services.NODE_RESOURCES`): nothing ever crosses the threshold, so the gateway's
and the controller's shards all sat on the head, where those drivers connect. `SPREAD`
would round-robin without looking at what runs where; here the controller and the drain
count the plane's shards per node and pin the new one with a *soft* node affinity, so
that Ray still places it elsewhere if that node is gone or draining by then, and restarts
it elsewhere when its node dies.

When no node has a free unit of the resource (media nodes offer one unit per UDP port,
`cluster.regions.Region.media_udp_span`), the shard is created without a node: it waits
for resources, which is the demand Ray's autoscaler answers with a new node.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

LOOKUP_TIMEOUT_S = 5.0
# The resource Ray gives the head node alone.
HEAD_RESOURCE = "node:__internal_head__"


@dataclass(frozen=True)
class Slot:
    node_id: str
    ip: str
    capacity: float  # units of the resource the node offers
    head: bool = False


def draining() -> set[str]:
    from cluster.ray_private import draining_nodes

    try:
        return set(draining_nodes())
    except Exception:  # the private call is checked by tests; without it, none drain
        return set()


def slots(resource: str) -> list[Slot]:
    """The live, undrained nodes offering `resource` (blocking)."""
    out = draining()
    nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
    return [
        Slot(
            n["NodeID"],
            n["NodeManagerAddress"],
            float(n["Resources"][resource]),
            HEAD_RESOURCE in n["Resources"],
        )
        for n in nodes
        if n.get("Alive") and n["NodeID"] not in out and n.get("Resources", {}).get(resource)
    ]


def _node_of(self: Any) -> str:
    return str(ray.get_runtime_context().get_node_id())


async def node_of(name: str, namespace: str) -> str | None:
    """The node actor `name` runs on; None if it does not exist or does not answer soon
    (still waiting for a node, or restarting)."""
    try:
        handle = await asyncio.to_thread(ray.get_actor, name, namespace=namespace)
        node: Any = await asyncio.wait_for(handle.__ray_call__.remote(_node_of), LOOKUP_TIMEOUT_S)
    except Exception:
        return None
    return str(node)


async def nodes_of(names: list[str], namespace: str) -> dict[str, str]:
    """Shard -> node, for those of `names` that answer."""
    found = await asyncio.gather(*(node_of(name, namespace) for name in names))
    return {name: node for name, node in zip(names, found, strict=True) if node is not None}


def choose(candidates: list[Slot], placed: dict[str, str]) -> str | None:
    """The node for one more shard: of those with a free unit, the one holding fewest of the
    plane's shards (`placed`: shard -> node), a worker before the head (which holds the GCS
    and, locally, the drivers), then the one with most units left; None when every node is
    full."""
    held: dict[str, int] = {}
    for node in placed.values():
        held[node] = held.get(node, 0) + 1
    free = [s for s in candidates if held.get(s.node_id, 0) + 1 <= s.capacity]
    if not free:
        return None
    best = min(
        free,
        key=lambda s: (held.get(s.node_id, 0), s.head, held.get(s.node_id, 0) - s.capacity, s.ip),
    )
    return best.node_id


async def start(
    actor_class: Any,
    name: str,
    namespace: str,
    args: tuple[Any, ...],
    resource: str,
    peers: list[str],
    known: dict[str, str] | None = None,
) -> str | None:
    """Start shard `name` of `actor_class` (a no-op if it runs) on the node `choose` picks
    among those offering `resource`, given where its `peers` run (`known`: shard -> node
    already decided, for peers too young to answer); returns that node (None: left to Ray,
    waiting for a node)."""
    with contextlib.suppress(ValueError):
        await asyncio.to_thread(ray.get_actor, name, namespace=namespace)
        return await node_of(name, namespace)
    candidates = await asyncio.to_thread(slots, resource)
    known = known or {}
    ask = [p for p in peers if p != name and p not in known]
    node = choose(candidates, {**await nodes_of(ask, namespace), **known})
    options: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "get_if_exists": True,
        "lifetime": "detached",
    }
    if node is not None:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=True)
    await asyncio.to_thread(lambda: actor_class.options(**options).remote(*args))
    return node
