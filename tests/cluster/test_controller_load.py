"""The controller adds a room shard under load and removes it after, while events keep
being appended to the rooms: every acknowledged event is in its room's journal exactly
once, and the rooms keep their candidates."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from typing import Any

import ray
from fastapi import FastAPI

from api.runtime import Runtime
from cluster import controller
from core import keys
from infra.settings import Settings
from infra.settings.ops import OpsSettings
from infra.telemetry import actor_call
from tests.cluster.pinning import members_now, pinned, plane
from tests.support.beats import beating

ROOMS = 6


async def _step(runtime: Runtime, settings: Settings, ops: OpsSettings) -> dict[str, Any]:
    name = f"controller-load-{secrets.token_hex(3)}"
    handle = await asyncio.to_thread(
        controller.get_or_create, settings.model_copy(update={"ops": ops}), name
    )
    try:
        return plane(await actor_call(handle.step), "rooms")
    finally:
        ray.kill(handle)


async def _loads(runtime: Runtime) -> list[int]:
    shards = runtime.rooms
    names = await members_now(shards.directory)
    return [int((await (await shards.handle(n)).stats.remote())["rooms"]) for n in names]


async def test_a_room_shard_added_under_load_and_removed_after_loses_no_event(
    app: FastAPI, settings: Settings
) -> None:
    runtime: Runtime = app.state.runtime
    exam = f"load{secrets.token_hex(3)}"
    rooms = [keys.room_key(exam, f"r{i}") for i in range(ROOMS)]
    for key in rooms:
        await runtime.rooms.heartbeat(key, "c-load", "wifi", uuid.uuid4().hex, join=True)
    acknowledged: dict[str, list[int]] = {key: [] for key in rooms}
    stop = asyncio.Event()

    async def write() -> None:
        n = 0
        while not stop.is_set():
            for key in rooms:
                await runtime.rooms.append(key, {"type": "note", "n": n})
                acknowledged[key].append(n)
            n += 1

    writer = asyncio.get_running_loop().create_task(write())
    try:
        async with beating(runtime.rooms, rooms, "c-load"):
            loads = await _loads(runtime)
            count, total = len(loads), sum(loads)
            base = await pinned(runtime)
            # Under load: more rooms per shard than the high mark.
            grow = base.model_copy(
                update={
                    "controller_min_shards": settings.room_shards,
                    "controller_max_shards": count + 1,
                    "controller_rooms_high": max(1, -(-total // count) - 1),
                    "controller_rooms_low": 0,
                }
            )
            grown = await _step(runtime, settings, grow)
            assert (grown["action"], grown["reason"]) == ("grow", "rooms_per_shard_high")
            assert len(await members_now(runtime.rooms.directory)) == count + 1
            # After: fewer rooms per shard than the low mark, and one shard fewer stays under
            # the high one.
            total = sum(await _loads(runtime))
            shrink = grow.model_copy(
                update={"controller_rooms_high": total + 1, "controller_rooms_low": total // 2 + 1}
            )
            shrunk = await _step(runtime, settings, shrink)
            assert (shrunk["action"], shrunk["reason"]) == ("shrink", "rooms_per_shard_low")
            assert len(await members_now(runtime.rooms.directory)) == count
    finally:
        stop.set()
        await writer
    for key in rooms:
        journal: Any = await runtime.redis.xrange(keys.room_events_key(key))
        notes = [
            event["n"]
            for event in (json.loads(fields[b"e"]) for _, fields in journal)
            if event["type"] == "note"
        ]
        assert notes == acknowledged[key], key
        assert len(notes) > 0
        view = await runtime.rooms.room_view(key)
        assert view["presence"]["c-load"]["state"] == "joined"


async def test_room_shards_follow_the_node_count(app: FastAPI, settings: Settings) -> None:
    """With `controller_room_shards_per_node` the live nodes set the floor: one more shard
    per node than there are shards now makes it grow; with it off, it shrinks back."""
    runtime: Runtime = app.state.runtime
    count = len(await members_now(runtime.rooms.directory))
    base = await pinned(runtime)
    per_node = base.model_copy(
        update={"controller_room_shards_per_node": count + 1, "controller_max_shards": 256}
    )
    nodes = await asyncio.to_thread(controller.nodes_offering)
    grown = await _step(runtime, settings, per_node)
    assert (grown["action"], grown["reason"]) == ("grow", "below_min_shards")
    assert nodes["room_shard"] >= 1
    back = await _step(runtime, settings, base.model_copy(update={"controller_min_shards": count}))
    assert (back["action"], back["reason"]) == ("shrink", "above_max_shards")
    assert len(await members_now(runtime.rooms.directory)) == count
