"""A master-key rotation before `examday keys rotate`: every actor still opens old data keys.

The session's gateway wraps each exam's data key under the session's master key.
Each test here starts an actor of its own as a platform deployed after a
rotation would: a new master key, the session's key among the previous ones,
and no `keys rotate` run. That actor must still read and write the exam's data.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import ray
from fastapi import FastAPI
from pydantic import SecretStr

from actors.face.monitor import FaceMonitor
from actors.ingest.append import IngestBatch
from actors.ingest.shard import LogIngest
from actors.media.shard import MediaShard
from core import keys
from infra.settings import Settings
from infra.telemetry import actor_call
from loadtests.synthetic import faceless
from tests.face.conftest import enrol, jpeg, photo_bytes
from tests.ingest.helpers import ndjson, new_device, read_objects, record
from tests.privacy.conftest import runtime_of
from tests.support import webrtc
from tests.support.factories import consenting_candidate, joined_candidate, new_exam
from tests.support.wait import until

# Few samples confirm an incident: the test needs one, not the production hysteresis.
PERSIST_SAMPLES = 2


def after_rotation(settings: Settings) -> Settings:
    """The session's settings as deployed after a rotation away from its master key."""
    new_key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    face = settings.face.model_copy(update={"monitor_persist_samples": PERSIST_SAMPLES})
    rotated = settings.model_copy(
        update={
            "data_master_key": SecretStr(new_key),
            "data_master_keys_previous": settings.data_master_key,
            "face": face,
        }
    )
    assert rotated.master_key_bytes() != settings.master_key_bytes()
    assert rotated.previous_master_keys() == [settings.master_key_bytes()]
    return rotated


@asynccontextmanager
async def own_actor(
    actor_class: Any, settings: Settings, *, takes_name: bool
) -> AsyncIterator[tuple[str, Any]]:
    """An actor of this test only, killed at the end; named, so that routers find it.
    Shards are also told their name (`takes_name`), as their clients start them."""
    name = f"rotation-test-{secrets.token_hex(3)}"
    args = (settings, name) if takes_name else (settings,)
    handle = actor_class.options(name=name, namespace=settings.ray_namespace).remote(*args)
    try:
        yield name, handle
    finally:
        await asyncio.to_thread(ray.kill, handle, no_restart=True)


async def test_the_face_monitor_stores_evidence_sealed_before_the_rotation(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["4101"]}, region="cn-east")
    # The face template is sealed by the gateway, under the session's (now previous) key.
    await consenting_candidate(client, world.exam_id, "4101")  # compared with consent only
    assert (await enrol(client, world, "4101", photo_bytes("person_a_1"))).status_code == 200
    cid = world.candidate_ids["4101"]
    empty = jpeg(faceless())
    async with own_actor(FaceMonitor, after_rotation(settings), takes_name=False) as (_, monitor):
        started = 1_800_000_000.0
        for index in range(PERSIST_SAMPLES + 1):
            await actor_call(monitor.observe, world.exam_id, "r1", cid, empty, started + index)
        stats = await actor_call(monitor.stats)
    assert stats.get("not_enrolled", 0) == 0, stats
    assert stats.get("incident:face_absent") == 1, stats

    entries: Any = await runtime.redis.xrange(keys.room_events_key(f"{world.exam_id}/r1"))
    events = [json.loads(fields[b"e"]) for _, fields in entries]
    incidents = [e for e in events if e["type"] == "incident" and e.get("cid") == cid]
    assert [i["incident"] for i in incidents] == ["face_absent"]
    # Sealed under the exam's data key, which the gateway opens with its own ring.
    assert await runtime.regional.get(world.exam_id, incidents[0]["evidence"]) == empty


async def test_a_media_shard_records_into_the_exams_region(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["4102"]}, region="cn-east")
    cid = world.candidate_ids["4102"]
    candidate = await joined_candidate(client, world.exam_id, "4102")
    recordings = f"/v1/exams/{world.exam_id}/rooms/r1/candidates/{cid}/recordings"
    rotated = after_rotation(settings)
    rotated = rotated.model_copy(
        update={
            "media": rotated.media.model_copy(
                update={"segment_seconds": 1.0, "load_report_interval_s": 0.5}
            )
        }
    )
    async with own_actor(MediaShard, rotated, takes_name=True) as (name, _):
        await runtime.media.router.assign(keys.room_key(world.exam_id, "r1"), name)

        async def reporting() -> bool:  # the router sends rooms only to live shards
            return bool(await runtime.media.router.loads([name]))

        await until(reporting, within=30, every=0.1)
        publisher = await webrtc.whip_publish(client, "/v1/whip/me/camera", candidate)
        try:
            assert publisher.response.status_code == 201, publisher.response.text

            async def recorded() -> bool:
                listed = await client.get(recordings, headers=world.proctors["r1"])
                return len(listed.json()["segments"]) >= 1

            await until(recorded, within=30, every=0.1)
        finally:
            await publisher.close()
    stored = await runtime.regional.list(world.exam_id, "recordings/")
    assert stored
    assert {str(entry["Key"]).split("/")[1] for entry in stored} == {"recordings"}


async def test_log_ingest_writes_an_exams_batch(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["4103"]}, region="cn-east", with_proctors=False)
    tag = secrets.token_hex(5)
    device = new_device()
    lines = [record(device, rid=f"{tag}-{i}") for i in range(5)]
    batch = IngestBatch(ndjson(lines), "ndjson", "cn-east", world.exam_id)
    async with own_actor(LogIngest, after_rotation(settings), takes_name=True) as (name, shard):
        stream = keys.ingest_stream_key(name)
        answer = await actor_call(shard.append, batch)
        assert answer["accepted"] == len(lines)
        drained = await actor_call(shard.drain, 30.0)
        assert drained["drained"], drained
    try:
        objects = await read_objects(runtime, "cn-east", f"{world.exam_id}/logs/")
        stored = [line["id"] for o in objects for line in o.lines if line["id"].startswith(tag)]
        assert sorted(stored) == sorted(line["id"] for line in lines)
    finally:
        # No other shard should keep visiting this test's stream.
        await runtime.redis.srem(keys.INGEST_STREAMS, stream)
        await runtime.redis.delete(stream)
