"""The room shard controller: decisions within limits and cool-downs, and a real controller
actor growing and shrinking the room shards, each decision counted for `/metrics` and
logged as a JSON line with its reason and the trace id of the call."""

from __future__ import annotations

import asyncio
import os
import secrets
import time

import httpx
import pytest
import ray
from fastapi import FastAPI

from api.runtime import Runtime
from cluster import controller
from cluster.controller import decide
from infra.metrics import DECISIONS_KEY
from infra.ops_settings import OpsSettings
from infra.settings import Settings
from infra.telemetry import actor_call, tracer
from tests.sre.logfiles import json_lines, worker_err_files

OPS = OpsSettings(
    controller_min_shards=2,
    controller_max_shards=4,
    controller_rooms_high=100,
    controller_rooms_low=20,
    controller_cooldown_s=60,
)


@pytest.mark.parametrize(
    ("loads", "since", "action", "reason"),
    [
        ([5], 0, "grow", "below_min_shards"),
        ([1, 1, 1, 1, 1], 0, "shrink", "above_max_shards"),
        ([150, 150], 10, "hold", "cooldown"),
        ([150, 150], 600, "grow", "rooms_per_shard_high"),
        ([150, 150, 150, 150], 600, "hold", "at_max_shards"),
        ([10, 10, 10], 600, "shrink", "rooms_per_shard_low"),
        ([10, 10], 600, "hold", "in_band"),
        ([60, 60, 60], 600, "hold", "in_band"),
    ],
)
def test_decisions(loads: list[int], since: float, action: str, reason: str) -> None:
    decision = decide(loads, OPS, since)
    assert (decision.action, decision.reason) == (action, reason)
    assert decision.rooms == sum(loads)


def test_shrinking_never_pushes_the_rest_above_the_high_mark() -> None:
    ops = OPS.model_copy(update={"controller_rooms_low": 99})
    # 3 shards at 90 rooms are under the low mark, but 2 would hold 135 each.
    assert decide([90, 90, 90], ops, 600).reason == "in_band"


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="controller_min_shards"):
        OpsSettings(controller_min_shards=5, controller_max_shards=2)


async def _counts(runtime: Runtime) -> dict[str, int]:
    raw = await runtime.redis.hgetall(DECISIONS_KEY)
    return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}


async def test_controller_grows_and_shrinks_the_room_shards(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings
) -> None:
    runtime: Runtime = app.state.runtime
    before = await _counts(runtime)
    count = len(await runtime.rooms.directory.members())
    for target, action in ((count + 1, "grow"), (count, "shrink")):
        ops = OpsSettings(
            controller_min_shards=target,
            controller_max_shards=target,
            controller_cooldown_s=0,
            log_format="json",
        )
        name = f"controller-test-{secrets.token_hex(3)}"
        handle = await asyncio.to_thread(
            controller.get_or_create, settings.model_copy(update={"ops": ops}), name
        )
        try:
            pid = await handle.__ray_call__.remote(lambda self: os.getpid())
            with tracer().start_as_current_span("test.controller") as span:
                decision = await actor_call(handle.step)
        finally:
            ray.kill(handle)
        assert decision["action"] == action
        assert len(await runtime.rooms.directory.members()) == target
        # The decision is a JSON line in the actor's own log, with its reason and trace.
        logged = [
            line
            for path in worker_err_files(settings, pid)
            for line in json_lines(path)
            if line.get("component") == "shard_controller" and line.get("action") == action
        ]
        assert len(logged) == 1, logged
        assert logged[0]["reason"] == decision["reason"]
        assert logged[0]["shards"] == decision["shards"]
        assert logged[0]["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    after = await _counts(runtime)
    assert after["grow:below_min_shards"] == before.get("grow:below_min_shards", 0) + 1
    assert after["shrink:above_max_shards"] == before.get("shrink:above_max_shards", 0) + 1
    text = (await client.get("/metrics")).text
    assert 'examday_controller_decisions{action="grow",reason="below_min_shards"}' in text
    history = await controller.history(runtime.redis, limit=2)
    assert [h["action"] for h in history] == ["shrink", "grow"]


async def test_a_restarted_controller_resumes_its_loop(app: FastAPI, settings: Settings) -> None:
    """Made with run=True (as `examday up` makes it), the loop comes back after Ray restarts
    the actor; bounds equal to the current shard count make every decision a hold."""
    runtime: Runtime = app.state.runtime
    count = len(await runtime.rooms.directory.members())
    ops = OpsSettings(
        controller_min_shards=count, controller_max_shards=count, controller_interval_s=0.2
    )
    name = f"controller-loop-{secrets.token_hex(3)}"
    handle = await asyncio.to_thread(
        controller.get_or_create, settings.model_copy(update={"ops": ops}), name, run=True
    )
    try:
        first = await handle.__ray_call__.remote(lambda self: os.getpid())
        restarted_at = time.time()
        ray.kill(handle, no_restart=False)
        deadline = time.monotonic() + 60
        while True:
            try:
                pid = await handle.__ray_call__.remote(lambda self: os.getpid())
                break
            except ray.exceptions.RayActorError:
                assert time.monotonic() < deadline, "the controller did not come back"
                await asyncio.sleep(0.2)
        assert pid != first
        while True:
            history = await controller.history(runtime.redis, limit=5)
            if any(entry["at"] > restarted_at for entry in history):
                break
            assert time.monotonic() < deadline, "the restarted controller decided nothing"
            await asyncio.sleep(0.2)
    finally:
        ray.kill(handle, no_restart=True)
    assert history[0]["action"] == "hold"
    assert len(await runtime.rooms.directory.members()) == count
