"""A real controller actor growing and shrinking the room shards and the media shards,
each decision counted for `/metrics` and logged as a JSON line with its reason and the
trace id of the call; a controller that Ray restarts resumes its loop. (The decisions
themselves: test_scaling.py.)"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
import uuid
from typing import Any

import httpx
import pytest
import ray
from fastapi import FastAPI

from api.runtime import Runtime
from cluster import controller, status
from core import keys
from infra.settings import Settings
from infra.telemetry import actor_call, tracer
from tests.cluster.logfiles import json_lines, worker_err_files
from tests.cluster.pinning import members_now, pinned, plane


async def _counts(runtime: Runtime) -> dict[str, int]:
    raw = await runtime.redis.hgetall(keys.CONTROLLER_DECISIONS)
    return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}


async def test_controller_grows_and_shrinks_the_room_shards(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings
) -> None:
    runtime: Runtime = app.state.runtime
    before = await _counts(runtime)
    count = len(await members_now(runtime.rooms.directory))
    for target, action in ((count + 1, "grow"), (count, "shrink")):
        ops = await pinned(runtime, rooms=target, log_format="json")
        name = f"controller-test-{secrets.token_hex(3)}"
        handle = await asyncio.to_thread(
            controller.get_or_create, settings.model_copy(update={"ops": ops}), name
        )
        try:
            pid = await handle.__ray_call__.remote(lambda self: os.getpid())
            with tracer().start_as_current_span("test.controller") as span:
                decisions = await actor_call(handle.step)
        finally:
            ray.kill(handle)
        decision = plane(decisions, "rooms")
        assert decision["action"] == action
        assert plane(decisions, "media")["action"] == "hold"
        assert len(await members_now(runtime.rooms.directory)) == target
        # The decision is a JSON line in the actor's own log, with its reason and trace.
        logged = [
            line
            for path in worker_err_files(settings, pid)
            for line in json_lines(path)
            if line.get("component") == "shard_controller"
            and (line.get("plane"), line.get("action")) == ("rooms", action)
        ]
        assert len(logged) == 1, logged
        assert logged[0]["reason"] == decision["reason"]
        assert logged[0]["shards"] == decision["shards"]
        assert logged[0]["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    after = await _counts(runtime)
    assert after["grow:below_min_shards"] == before.get("grow:below_min_shards", 0) + 1
    assert after["shrink:above_max_shards"] == before.get("shrink:above_max_shards", 0) + 1
    text = (await client.get("/metrics/cluster")).text
    assert 'examday_controller_decisions_total{action="grow",reason="below_min_shards"}' in text
    history = await controller.history(runtime.redis, limit=6)  # 3 planes, 2 steps
    assert [h["action"] for h in history if h["plane"] == "rooms"] == ["shrink", "grow"]


async def test_a_restarted_controller_resumes_its_loop(app: FastAPI, settings: Settings) -> None:
    """Made with run=True (as `examday up` makes it), the loop comes back after Ray restarts
    the actor; bounds equal to the current shard count make every decision a hold."""
    runtime: Runtime = app.state.runtime
    count = len(await members_now(runtime.rooms.directory))
    ops = await pinned(runtime, controller_interval_s=0.2)
    name = f"controller-loop-{secrets.token_hex(3)}"
    handle = await asyncio.to_thread(
        controller.get_or_create, settings.model_copy(update={"ops": ops}), name, run=True
    )
    try:
        first = await handle.__ray_call__.remote(lambda self: os.getpid())
        restarted_at = time.time()
        ray.kill(handle, no_restart=False)
        deadline = time.monotonic() + 60
        pid = first
        while pid == first:  # the kill takes effect a moment later
            assert time.monotonic() < deadline, "the controller did not come back"
            await asyncio.sleep(0.2)
            try:
                pid = await handle.__ray_call__.remote(lambda self: os.getpid())
            except ray.exceptions.RayActorError:
                continue
        while True:
            history = await controller.history(runtime.redis, limit=10)
            fresh = [entry for entry in history if entry["at"] > restarted_at]
            if fresh:
                break
            assert time.monotonic() < deadline, "the restarted controller decided nothing"
            await asyncio.sleep(0.2)
        # `examday cluster status` sees it looping, with its latest decisions.
        shown = await status.controller_status(settings, runtime.redis, name)
    finally:
        ray.kill(handle, no_restart=True)
    assert {entry["action"] for entry in fresh} == {"hold"}
    assert shown["state"] == "running"
    assert {plane: d["action"] for plane, d in shown["latest"].items()} == {
        "rooms": "hold",
        "media": "hold",
        "ingest": "hold",
    }
    assert len(await members_now(runtime.rooms.directory)) == count


async def test_controller_grows_and_retires_a_media_shard(app: FastAPI, settings: Settings) -> None:
    """Growing adds a media shard; shrinking retires the one the gateways do not ensure,
    telling its rooms to reconnect elsewhere, and stops it."""
    runtime: Runtime = app.state.runtime
    media = runtime.media.router
    before = sorted(await members_now(media.directory))
    decided = []
    for target in (len(before) + 1, len(before)):
        ops = await pinned(runtime, media=target)
        name = f"controller-media-{secrets.token_hex(3)}"
        handle = await asyncio.to_thread(
            controller.get_or_create, settings.model_copy(update={"ops": ops}), name
        )
        try:
            if target > len(before):
                decided.append(plane(await actor_call(handle.step), "media"))
                [added] = sorted(set(await members_now(media.directory)) - set(before))
                # A live room whose media is on the new shard.
                key = keys.room_key(f"scale{secrets.token_hex(3)}", "r1")
                await runtime.rooms.heartbeat(key, "c-scale", "wifi", uuid.uuid4().hex, join=True)
                await media.assign(key, added)
            else:
                decided.append(plane(await actor_call(handle.step), "media"))
        finally:
            ray.kill(handle)
    assert [(d["action"], d["reason"]) for d in decided] == [
        ("grow", "media_below_min_shards"),
        ("shrink", "media_above_max_shards"),
    ]
    assert sorted(await members_now(media.directory)) == before
    with pytest.raises(ValueError, match="look up actor"):  # stopped, not only unlisted
        ray.get_actor(added, namespace=settings.ray_namespace)
    journal: Any = await runtime.redis.xrange(keys.room_events_key(key))
    last = json.loads(journal[-1][1][b"e"])
    assert (last["type"], last["plane"], last["reason"]) == ("reconnect", "media", "scale_down")
