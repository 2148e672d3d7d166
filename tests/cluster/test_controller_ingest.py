"""The controller grows the log ingest shards and retires one without losing a record:
a batch acknowledged by the shard it retires is in the object store exactly once."""

from __future__ import annotations

import asyncio
import secrets

import httpx
import pytest
import ray
from fastapi import FastAPI

from api.runtime import Runtime
from cluster import controller
from core import hashing
from infra.settings import Settings
from infra.telemetry import actor_call
from tests.cluster.pinning import members_now, pinned, plane
from tests.ingest.helpers import anonymous_prefix, ndjson, new_device, read_objects, record

RECORDS = 3


async def _step(runtime: Runtime, settings: Settings, ingest: int) -> dict[str, object]:
    ops = await pinned(runtime, ingest=ingest)
    name = f"controller-ingest-{secrets.token_hex(3)}"
    handle = await asyncio.to_thread(
        controller.get_or_create, settings.model_copy(update={"ops": ops}), name
    )
    try:
        return plane(await actor_call(handle.step), "ingest")
    finally:
        ray.kill(handle)


async def test_controller_grows_and_retires_an_ingest_shard_losing_nothing(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings
) -> None:
    runtime: Runtime = app.state.runtime
    await runtime.ingest.ensure_shards()
    directory = runtime.ingest.directory
    before = sorted(await members_now(directory))

    grown = await _step(runtime, settings, len(before) + 1)
    assert (grown["action"], grown["reason"]) == ("grow", "ingest_below_min_shards")
    members = await members_now(directory)
    [added] = sorted(set(members) - set(before))
    # A device the hash ring gives to the new shard.
    device = next(
        d
        for d in (new_device() for _ in range(10_000))
        if hashing.owner(runtime.ingest.pseudonyms.device(d), members) == added
    )
    tag = f"scale{secrets.token_hex(4)}"
    batch = ndjson([record(device, rid=f"{tag}-{i}") for i in range(RECORDS)])
    await asyncio.sleep(1)  # the gateway's directory cache (0.5 s) sees the new shard
    sent = await client.post(
        "/v1/logs", content=batch, headers={"content-type": "application/x-ndjson"}
    )
    assert sent.status_code == 202, sent.text
    stats = await runtime.ingest.shard_stats(added)
    assert stats["appended"] == RECORDS  # acknowledged by the shard about to go

    retired = await _step(runtime, settings, len(before))
    assert (retired["action"], retired["reason"]) == ("shrink", "ingest_above_max_shards")
    assert sorted(await members_now(directory)) == before
    with pytest.raises(ValueError, match="look up actor"):
        ray.get_actor(added, namespace=settings.ray_namespace)
    await runtime.ingest.drain()
    objects = await read_objects(runtime, settings.ingest.default_region, anonymous_prefix())
    stored = [line["id"] for o in objects for line in o.lines if line["id"].startswith(tag)]
    assert sorted(stored) == [f"{tag}-{i}" for i in range(RECORDS)]
