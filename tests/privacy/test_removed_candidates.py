"""A candidate the organiser removed (`DELETE /v1/exams/{e}/candidates/{cid}`) is off their
room's roster, yet stays a subject of every retention rule: their recordings, face records
and uploads go at their classes' time, Redis records included, with receipts, rather than
years later with the exam record."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from core import keys
from tests.privacy.conftest import (
    ended_exam,
    image_bytes,
    image_headers,
    joined_before_the_end,
    runtime_of,
)
from tests.privacy.helpers import platform_data, versions


async def test_a_removed_candidates_data_goes_by_its_class_rule(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await ended_exam(client, runtime, {"r1": ["7001", "7002"]})
    exam, cid = world.exam_id, world.candidate_ids["7001"]
    me = await joined_before_the_end(client, runtime, exam, "7001")
    shared = await client.post(
        "/v1/uploads/photos", content=image_bytes(), headers=image_headers(me)
    )
    assert shared.status_code == 201, shared.text
    await platform_data(runtime, exam, cid)
    # The Redis records the media shard and the face service keep beside those objects.
    index, entries = keys.recording_keys(exam, cid)
    await runtime.redis.zadd(index, {"s0001-00001": 1.0})
    await runtime.redis.hset(entries, "s0001-00001", "{}")
    await runtime.redis.hset(keys.face_record_key(exam, cid), "state", "enrolled")
    await runtime.redis.rpush(keys.face_evidence_key(exam, cid), f"{exam}/evidence/{cid}/x.jpg")
    records = [
        index,
        entries,
        keys.face_record_key(exam, cid),
        keys.face_evidence_key(exam, cid),
        keys.privacy_uploads_key(exam, cid),
    ]
    assert await runtime.redis.exists(*records) == len(records)

    removed = await client.delete(f"/v1/exams/{exam}/candidates/{cid}", headers=world.organiser)
    assert removed.status_code == 204, removed.text
    run = await client.post(f"/v1/exams/{exam}/retention/runs", headers=world.organiser)
    assert run.status_code == 200, run.text
    assert run.json()["failed_groups"] == []

    for data_class in ("recordings", "face", "evidence", "photos"):
        assert await versions(runtime, "cn-north", f"{exam}/{data_class}/{cid}/") == set()
    assert await runtime.redis.exists(*records) == 0
    entries_out = (
        await client.get(f"/v1/exams/{exam}/retention/receipts", headers=world.organiser)
    ).json()["entries"]
    receipted = {
        key
        for e in entries_out
        if e["kind"] == "deletion" and e["body"]["clause"].startswith("retention[")
        for key in e["body"]["redis_keys"]
    }
    assert set(records) <= receipted
