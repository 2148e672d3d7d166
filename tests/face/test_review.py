"""Attempts run out, a proctor of the room reviews enrolled vs live, the candidate joins."""

from __future__ import annotations

import json
from typing import Any

import httpx
from fastapi import FastAPI

from core import keys
from core.room_text import FREE_TEXT
from tests.face.conftest import enrol, image_headers, photo_bytes, runtime_of
from tests.support.exif import pixel_gap
from tests.support.factories import consenting_candidate, new_exam


async def journal(app: FastAPI, key: str) -> list[dict[str, Any]]:
    entries: Any = await runtime_of(app).redis.xrange(keys.room_events_key(key))
    return [json.loads(fields[b"e"]) for _, fields in entries]


async def test_failed_attempts_go_to_a_proctor_who_accepts(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    world = await new_exam(
        client,
        runtime_of(app),
        {"r1": ["3001"], "r2": ["3002"]},
        face_attempts=2,
        keep_enrolment_photo=True,
        require_face_verification=True,
    )
    assert (await enrol(client, world, "3001", photo_bytes("person_b_1"))).status_code == 200
    candidate = await consenting_candidate(client, world.exam_id, "3001")
    refused = await client.post("/v1/me/join", json={}, headers=candidate)
    assert refused.status_code == 403
    assert refused.json()["reason"] == "face_verification_required"

    # Someone else in front of the camera: two decisions, both no match.
    results = []
    for _ in range(2):
        response = await client.post(
            "/v1/me/verification",
            content=photo_bytes("impostor_2"),
            headers=image_headers(candidate),
        )
        assert response.status_code == 200, response.text
        results.append(response.json())
    assert [r["attempts_left"] for r in results] == [1, 0]
    assert results[0]["review"] is None
    review_id = results[1]["review"]
    assert results[1]["status"] == "review"
    blocked = await client.post(
        "/v1/me/verification", content=photo_bytes("person_b_2"), headers=image_headers(candidate)
    )
    assert blocked.status_code == 409
    assert blocked.json()["reason"] == "review_pending"
    pending = await client.post("/v1/me/join", json={}, headers=candidate)
    assert pending.json()["reason"] == "face_review_pending"

    # The proctor of the room sees the enrolled photo and the live frames.
    proctor = world.proctors["r1"]
    base = f"/v1/exams/{world.exam_id}/rooms/r1/face-reviews"
    (review,) = (await client.get(base, headers=proctor)).json()["reviews"]
    assert (review["id"], review["status"]) == (review_id, "pending")
    assert len(review["live"]) == 2
    enrolled = await client.get(review["enrolled_photo"], headers=proctor)
    assert enrolled.status_code == 200
    assert pixel_gap(enrolled.content, photo_bytes("person_b_1")) < 3  # without its metadata
    live = await client.get(review["live"][1]["url"], headers=proctor)
    assert live.headers["content-type"] == "image/jpeg"
    assert live.content == photo_bytes("impostor_2")

    # Not visible from another room, not decided by an organiser.
    other = world.proctors["r2"]
    assert (await client.get(f"{base}/{review_id}", headers=other)).status_code == 404
    assert (await client.get(base, headers=other)).status_code == 404
    by_organiser = await client.post(
        f"{base}/{review_id}", json={"decision": "accept"}, headers=world.organiser
    )
    assert by_organiser.json()["reason"] == "proctors_only"

    accepted = await client.post(
        f"{base}/{review_id}",
        json={"decision": "accept", "note": "ID card checked on camera"},
        headers=proctor,
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["status"] == "accepted"
    # The proctor's reason reads back as written, and is kept sealed (core.room_text).
    assert accepted.json()["note"] == "ID card checked on camera"
    fetched = await client.get(f"{base}/{review_id}", headers=proctor)
    assert fetched.json()["note"] == "ID card checked on camera"
    stored = await runtime_of(app).redis.hget(keys.face_reviews_key(world.exam_id), review_id)
    assert stored is not None
    assert b"ID card checked" not in stored
    twice = await client.post(f"{base}/{review_id}", json={"decision": "reject"}, headers=proctor)
    assert twice.status_code == 409
    assert twice.json()["reason"] == "review_decided"

    joined = await client.post("/v1/me/join", json={}, headers=candidate)
    assert joined.status_code == 200, joined.text
    cid = world.candidate_ids["3001"]
    events = [e for e in await journal(app, f"{world.exam_id}/r1") if e.get("cid") == cid]
    assert [e["type"] for e in events] == ["face_review_requested", "face_review", "joined"]
    decision = events[1]
    assert (decision["review"], decision["decision"]) == (review_id, "accepted")
    assert decision["by"].startswith("pro-")
    assert "note" not in decision
    assert FREE_TEXT["note"] in decision


async def test_a_rejected_candidate_cannot_join(client: httpx.AsyncClient, app: FastAPI) -> None:
    world = await new_exam(
        client, runtime_of(app), {"r1": ["3101"]}, face_attempts=1, require_face_verification=True
    )
    assert (await enrol(client, world, "3101", photo_bytes("person_a_1"))).status_code == 200
    candidate = await consenting_candidate(client, world.exam_id, "3101")
    answer = await client.post(
        "/v1/me/verification", content=photo_bytes("person_b_2"), headers=image_headers(candidate)
    )
    review_id = answer.json()["review"]
    proctor = world.proctors["r1"]
    base = f"/v1/exams/{world.exam_id}/rooms/r1/face-reviews"
    (review,) = (await client.get(base, headers=proctor)).json()["reviews"]
    assert review["enrolled_photo"] is None  # the exam does not keep enrolment photos
    missing = await client.get(f"{base}/{review_id}/enrolled", headers=proctor)
    assert missing.json()["reason"] == "no_enrolment_photo"
    rejected = await client.post(
        f"{base}/{review_id}", json={"decision": "reject"}, headers=proctor
    )
    assert rejected.json()["status"] == "rejected"
    refused = await client.post("/v1/me/join", json={}, headers=candidate)
    assert refused.status_code == 403
    assert refused.json()["reason"] == "face_rejected"
