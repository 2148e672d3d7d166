"""A consumer that dies mid-flush: another claims its entries, nothing is lost or written twice."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import httpx
import pytest
import ray
from fastapi import FastAPI

from actors.ingest.append import Appender, IngestBatch
from actors.ingest.flush import LogFlusher
from actors.ingest.sink import LogSink
from api.runtime import Runtime
from core.keys import INGEST_GROUP, ingest_marks_key, ingest_shard_name, ingest_stream_key
from infra.pseudonym import Pseudonyms
from infra.redis import text
from infra.settings import Settings
from tests.ingest.helpers import (
    anonymous_prefix,
    ndjson,
    new_device,
    read_objects,
    record,
    runtime_of,
)
from tests.support.factories import new_exam


async def _stored_ids(runtime: Runtime, tag: str, exam: str) -> list[str]:
    objects = await read_objects(runtime, "cn-north", anonymous_prefix())
    objects += await read_objects(runtime, "cn-east", f"{exam}/logs/")
    return [line["id"] for o in objects for line in o.lines if line["id"].startswith(tag)]


def _batch(
    settings: Settings, device: str, tag: str, kinds: list[str], exam: str | None
) -> tuple[IngestBatch, int]:
    records = [record(device, rid=f"{tag}-{i}", kind=kind) for i, kind in enumerate(kinds)]
    region = "cn-east" if exam else settings.ingest.default_region
    return IngestBatch(ndjson(records), "ndjson", region, exam), len(records)


@pytest.mark.parametrize("dies_after", ["commit", "first_object", "all_objects", "index"])
async def test_a_claimed_plan_is_redone_exactly(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings, dies_after: str
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["8001"]}, region="cn-east", with_proctors=False)
    # A shard of this test's own: no actor reads or claims its stream.
    shard = f"test-{secrets.token_hex(4)}"
    stream = ingest_stream_key(shard)
    pseudonyms = Pseudonyms(settings.pseudonym_key)
    appender = Appender(runtime.redis, settings.ingest, pseudonyms, shard)
    sink = LogSink(runtime.regional, runtime.stores)
    dying = LogFlusher(runtime.redis, sink, settings.ingest, "dying")
    heir = LogFlusher(runtime.redis, sink, settings.ingest, "heir")
    await dying.ensure_group(stream)
    tag = secrets.token_hex(5)
    batches = [
        _batch(settings, new_device(), f"{tag}-a", ["log"] * 30 + ["crash"] * 3, None),
        _batch(settings, new_device(), f"{tag}-b", ["log"] * 20 + ["metric"] * 5, world.exam_id),
        _batch(settings, new_device(), f"{tag}-c", ["crash"] * 4, world.exam_id),
    ]
    for batch, _ in batches:
        await appender.append(batch, time.time())
    sent = sum(count for _, count in batches)

    entries = await dying.read_new(stream)
    plan, taken = await dying.commit(stream, entries)
    assert plan is not None
    assert taken == []
    grouped = dying.group(plan)
    targets = list(grouped)
    assert len(targets) >= 4  # two targets, several kinds
    stored = {}
    if dies_after in ("first_object", "all_objects", "index"):
        for target in targets[: 1 if dies_after == "first_object" else None]:
            stored[target] = await dying.write(target, grouped[target])
    if dies_after == "index":
        await dying.index(plan, stored)
    # The dying consumer stops here: no acknowledgement, its entries stay pending.

    claimed = await heir.claim_stale(stream, min_idle_ms=0)
    assert sorted(e.id for e in claimed) == sorted(e.id for e in entries)
    assert await heir.flush(stream, claimed) == sent
    assert heir.plans_redone == 1

    ids = await _stored_ids(runtime, tag, world.exam_id)
    assert len(ids) == sent
    assert len(set(ids)) == sent
    assert await runtime.redis.xlen(stream) == 0
    pending: Any = await runtime.redis.xpending(stream, INGEST_GROUP)
    assert pending["pending"] == 0
    assert await runtime.redis.hlen(ingest_marks_key(stream)) == 0
    # The dying consumer, were it to come back, finds nothing left to do.
    assert await dying.flush(stream, entries) == 0


async def _next_incarnation(runtime: Runtime, name: str, killed: str) -> dict[str, Any]:
    """The stats of the incarnation after `killed`. Ray's kill goes through the GCS while a
    method call goes straight to the actor, so a call made just after the kill may still be
    answered by the incarnation it is about to kill, whose counters die with it."""
    for _ in range(600):
        stats = await runtime.ingest.shard_stats(name)  # waits out a restart
        if stats["consumer"] != killed:
            return stats
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} was never restarted")


async def test_killing_an_ingest_actor_mid_flush_loses_and_duplicates_nothing(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    runtime = runtime_of(app)
    await runtime.ingest.ensure_shards()
    victim_name = ingest_shard_name(0)
    stream = ingest_stream_key(victim_name)
    # Devices whose batches go to the victim shard: enough of them that steady traffic stays
    # under each device's rate limit.
    devices: list[str] = []
    while len(devices) < 24:
        device = new_device()
        pseudonym = runtime.ingest.pseudonyms.device(device)
        if await runtime.ingest.directory.owner(pseudonym) == victim_name:
            devices.append(device)
    tag = secrets.token_hex(5)
    sent = 0
    round_ = 0

    async def send() -> None:
        nonlocal sent, round_
        device = devices[round_ % len(devices)]
        batch = [
            record(device, rid=f"{tag}-{round_}-{i}", kind="crash" if i % 9 == 0 else "log")
            for i in range(100)
        ]
        round_ += 1
        body = ndjson(batch)
        for _ in range(50):  # the same ids again: a retry is stored once
            response = await client.post(
                "/v1/logs", content=body, headers={"content-type": "application/x-ndjson"}
            )
            if response.status_code != 503:
                break
            await asyncio.sleep(0.2)
        assert response.status_code == 202, response.text
        sent += len(batch)

    async def traffic(stop: asyncio.Event) -> None:
        while not stop.is_set():
            await send()
            await asyncio.sleep(0.01)

    async def claimed_by_others() -> int:
        others = [ingest_shard_name(i) for i in range(1, settings.ingest.shards)]
        stats = [await runtime.ingest.shard_stats(name) for name in others]
        return sum(int(shard["entries_claimed"]) for shard in stats)

    # Steady traffic keeps the victim reading, writing and acknowledging; SIGKILL it as soon
    # as it holds entries it read and did not acknowledge, again if it finished them before
    # the signal landed (a flush is tens of milliseconds, about what a kill takes to land:
    # ten tries were once not enough on a busy machine).
    victim = await asyncio.to_thread(ray.get_actor, victim_name, namespace=settings.ray_namespace)
    caught_mid_flush = False
    await send()  # the stream and its group exist from here on
    claimed_before = await claimed_by_others()
    stop = asyncio.Event()
    sender = asyncio.create_task(traffic(stop))
    killed = (await runtime.ingest.shard_stats(victim_name))["consumer"]
    try:
        for _ in range(40):
            for _ in range(2000):
                if await runtime.redis.xpending_range(stream, INGEST_GROUP, "-", "+", 1000):
                    break
                await asyncio.sleep(0.005)
            await asyncio.to_thread(ray.kill, victim, no_restart=False)
            restarted = await _next_incarnation(runtime, victim_name, killed)
            held: list[Any] = await runtime.redis.xpending_range(
                stream, INGEST_GROUP, "-", "+", 1000
            )
            orphaned = [p for p in held if text(p["consumer"]) != restarted["consumer"]]
            # The dead incarnation's entries are either still held by it, or (a restart
            # slower than `claim_idle_seconds`) already claimed by a living consumer.
            claimed = restarted["entries_claimed"] + await claimed_by_others() - claimed_before
            if orphaned or claimed:
                caught_mid_flush = True
                break
            killed = restarted["consumer"]  # the next kill's victim
    finally:
        stop.set()
        await sender
    assert caught_mid_flush, "no kill ever caught the victim mid-flush"
    for _ in range(5):
        await send()  # more traffic for the restarted shard

    drained = await runtime.ingest.drain(timeout_s=90)
    assert all(shard["drained"] for shard in drained), drained
    assert sum(shard["entries_claimed"] for shard in drained) >= len(orphaned)
    objects = await read_objects(runtime, "cn-north", anonymous_prefix())
    ids = [line["id"] for o in objects for line in o.lines if line["id"].startswith(tag)]
    assert len(ids) == sent
    assert len(set(ids)) == sent
