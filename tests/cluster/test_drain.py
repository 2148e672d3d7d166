"""`examday cluster drain`: a second Ray node joins the test cluster, gets a room shard
holding live rooms and a media shard serving one of them; the drain hands the rooms
over (state kept), tells the media room to reconnect, and leaves the node empty."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import ray
from fastapi import FastAPI
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.media.shard import MediaShard
from actors.rooms.shard import RoomShard
from api.runtime import Runtime
from cluster import drain, ray_private
from core import hashing, keys
from infra import services
from infra.errors import NotFound
from infra.processes import port_open
from infra.settings import Settings
from infra.stack import LocalStack
from tests.cluster.pinning import members_now
from tests.support.beats import beating


@pytest.fixture(scope="module")
def extra_node(stack: LocalStack) -> Iterator[str]:
    """A second node of the session's cluster, stopped (and so gone) after this module."""
    settings = stack.settings
    node = services.ray_node_process(settings, head=False, index=1)
    node.start()
    try:
        port = settings.ray_port_base + 200 + 1
        node.wait_healthy(lambda: port_open(settings.ray_worker_ip, port), 60)
        yield _wait_alive(settings.ray_worker_ip)
    finally:
        node.stop()


def _wait_alive(ip: str, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        nodes = ray.nodes()  # type: ignore[no-untyped-call]
        for found in nodes:
            if found["Alive"] and found["NodeManagerAddress"] == ip:
                return str(found["NodeID"])
        time.sleep(0.5)
    raise AssertionError(f"no node at {ip} joined")


def _wait_gone(node_id: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}  # type: ignore[no-untyped-call]
        if node_id not in alive and node_id not in ray_private.draining_nodes():
            return
        time.sleep(0.5)
    raise AssertionError(f"drained node {node_id} still in the cluster")


async def test_drain_hands_rooms_over_and_leaves_the_node_empty(
    app: FastAPI, settings: Settings, extra_node: str
) -> None:
    runtime: Runtime = app.state.runtime
    rooms, media = runtime.rooms, runtime.media.router
    pinned = NodeAffinitySchedulingStrategy(extra_node, soft=False)
    shard, media_shard = f"room-shard-drill{secrets.token_hex(2)}", "media-shard-drill"
    handle = RoomShard.options(  # type: ignore[attr-defined]
        name=shard,
        namespace=settings.ray_namespace,
        lifetime="detached",
        scheduling_strategy=pinned,
    ).remote(settings, shard)
    await rooms.directory.add(shard, {})
    MediaShard.options(  # type: ignore[attr-defined]
        name=media_shard,
        namespace=settings.ray_namespace,
        lifetime="detached",
        scheduling_strategy=pinned,
    ).remote(settings, media_shard)
    await media.directory.add(media_shard, {})
    members = await rooms.directory.members()
    exam = f"drill{secrets.token_hex(3)}"
    candidates = (keys.room_key(exam, f"r{i}") for i in range(500))
    drilled = [k for k in candidates if hashing.owner(k, members) == shard][:3]
    for key in drilled:
        await rooms.heartbeat(key, "c-drill", "wifi", uuid.uuid4().hex, join=True)
    assert sorted(await handle.owned_rooms.remote()) == sorted(drilled)
    await media.assign(drilled[0], media_shard)

    async with beating(rooms, drilled, "c-drill"):
        report = await drain.drain_node(settings, settings.ray_worker_ip, timeout_s=60)
        assert report.node_id == extra_node
        # Ray itself reports the node draining: the private call still does what it did.
        # Ray accepted the drain: once empty, the node leaves the cluster (its process,
        # which this module keeps running, would otherwise stay a live node).
        await asyncio.to_thread(_wait_gone, extra_node)
    assert report.remaining == [], drain.render(report)
    assert report.rooms_moved == {shard: 3}
    assert report.media_rooms == {media_shard: 1}
    assert shard not in await members_now(rooms.directory)
    assert media_shard not in await members_now(media.directory)
    for key in drilled:
        view = await rooms.room_view(key)
        assert view["presence"]["c-drill"]["state"] == "joined"
    journal: Any = await runtime.redis.xrange(keys.room_events_key(drilled[0]))
    kinds = [json.loads(fields[b"e"])["type"] for _, fields in journal]
    assert kinds[-1] == "reconnect"
    assert await runtime.redis.hget(keys.MEDIA_ROOMS, drilled[0]) is None
    placed = await drain.placements(settings.ray_namespace)
    assert extra_node not in placed.values()
    assert placed  # the other nodes' actors still answer
    assert "node is empty" in drain.render(report)


def test_an_unknown_node_is_refused(stack: LocalStack) -> None:
    with pytest.raises(NotFound) as refused:
        drain.resolve_node("127.0.0.99")
    assert refused.value.reason == "node_not_found"


def test_the_private_ray_drain_api_is_still_there(stack: LocalStack) -> None:
    """Fails on a Ray upgrade that removed what `cluster.ray_private` calls."""
    assert ray_private.missing_private_api() == []
