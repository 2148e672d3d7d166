"""Continuous monitoring through the real monitor actor, verifier replicas and room journal."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import ray
from fastapi import FastAPI

from actors.face.monitor import MONITOR_NAME
from core import keys
from infra.settings import Settings
from infra.telemetry import actor_call
from loadtests.synthetic import faceless
from tests.face.conftest import enrol, jpeg, photo_bytes, runtime_of
from tests.support.factories import candidate_login, consenting_candidate, new_exam


async def test_a_to_b_to_nobody_raises_mismatch_then_absence_once_each(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["4001", "4002"]}, region="cn-east")
    await consenting_candidate(client, world.exam_id, "4001")  # compared with consent only
    assert (await enrol(client, world, "4001", photo_bytes("person_a_1"))).status_code == 200
    cid = world.candidate_ids["4001"]
    monitor = await asyncio.to_thread(ray.get_actor, MONITOR_NAME, namespace=settings.ray_namespace)

    frames = {
        "A": photo_bytes("person_a_2"),
        "B": photo_bytes("person_b_1"),
        "empty": jpeg(faceless()),
    }
    stream = ["A"] * 4 + ["B"] * 5 + ["empty"] * 5
    started = 1_800_000_000.0
    for index, kind in enumerate(stream):
        wall_time = started + 10.0 * index
        await actor_call(monitor.observe, world.exam_id, "r1", cid, frames[kind], wall_time)

    entries: Any = await runtime.redis.xrange(keys.room_events_key(f"{world.exam_id}/r1"))
    events = [json.loads(fields[b"e"]) for _, fields in entries]
    incidents = [e for e in events if e["type"] == "incident" and e.get("cid") == cid]
    for incident in incidents:
        print({k: incident[k] for k in ("incident", "severity", "first_seen", "score", "evidence")})
    assert [i["incident"] for i in incidents] == ["identity_mismatch", "face_absent"]
    assert all(i["by"] == "face-monitor" for i in incidents)
    mismatch, absent = incidents
    assert mismatch["severity"] == "high"
    assert mismatch["first_seen"] == started + 40.0  # the first B sample
    assert mismatch["score"] < 0.363
    assert absent["first_seen"] == started + 90.0

    # The evidence is in the exam's region (sealed), and nowhere else.
    stores = runtime.stores
    for incident, kind in ((mismatch, "B"), (absent, "empty")):
        key = incident["evidence"]
        assert key.startswith(f"{world.exam_id}/evidence/{cid}/")
        assert await runtime.regional.get(world.exam_id, key) == frames[kind]
        sealed = await stores.call(
            "cn-east", "get_object", Bucket=stores.bucket("cn-east"), Key=key
        )
        assert sealed["Body"].read() != frames[kind]
    elsewhere = await stores.call(
        "cn-north", "list_objects_v2", Bucket=stores.bucket("cn-north"), Prefix=world.exam_id
    )
    assert elsewhere.get("KeyCount", 0) == 0

    # A replayed (older) sample is ignored; a candidate without enrolment costs nothing.
    await actor_call(monitor.observe, world.exam_id, "r1", cid, frames["B"], started)
    await actor_call(monitor.observe, world.exam_id, "r1", "0" * 24, frames["B"], started)
    stats = await actor_call(monitor.stats)
    assert stats["stale"] >= 1
    assert stats["not_enrolled"] >= 1

    # Enrolled by the organiser, but the candidate refused the biometric consent: their
    # samples are not compared at all (no incident of another person's face).
    refusing = world.candidate_ids["4002"]
    assert (await enrol(client, world, "4002", photo_bytes("person_a_1"))).status_code == 200
    headers = await candidate_login(client, world.exam_id, "4002")
    policy = await client.post("/v1/me/consent", json={"policy_version": "1"}, headers=headers)
    assert policy.status_code == 204, policy.text
    refused = await client.post("/v1/me/consents/biometric", json={"allow": False}, headers=headers)
    assert refused.status_code == 204, refused.text
    for index in range(6):
        wall_time = started + 10.0 * index
        await actor_call(monitor.observe, world.exam_id, "r1", refusing, frames["B"], wall_time)
    entries = await runtime.redis.xrange(keys.room_events_key(f"{world.exam_id}/r1"))
    theirs = [
        e
        for _, f in entries
        if (e := json.loads(f[b"e"]))["type"] == "incident" and e.get("cid") == refusing
    ]
    assert theirs == []
    after = await actor_call(monitor.stats)
    assert after["no_biometric_consent"] - stats.get("no_biometric_consent", 0) == 6
