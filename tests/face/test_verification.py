"""Enrolment and 1:1 verification through the gateway, on the real fixture photos."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from core import keys
from loadtests.synthetic import faceless, side_by_side
from tests.face.conftest import enrol, image_headers, jpeg, photo, photo_bytes, runtime_of
from tests.support.exif import assert_no_metadata, pixel_gap, with_gps
from tests.support.factories import consenting_candidate, new_exam

SCORES = {"score", "threshold", "margin", "distance", "similarity", "excursion"}


async def test_enrol_then_the_same_person_matches_and_an_impostor_does_not(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["1001", "1002"]}, face_attempts=3)
    for number in ("1001", "1002"):
        enrolled = await enrol(client, world, number, photo_bytes("person_a_1"))
        assert enrolled.status_code == 200, enrolled.text
        assert enrolled.json()["status"] == "enrolled"
        assert enrolled.json()["photo_kept"] is False

    genuine = await consenting_candidate(client, world.exam_id, "1001")
    match = await client.post(
        "/v1/me/verification", content=photo_bytes("person_a_2"), headers=image_headers(genuine)
    )
    assert match.status_code == 200, match.text
    result = match.json()
    assert result["match"] is True
    assert result["status"] == "verified"
    assert not set(result) & SCORES, result  # match or no match, nothing to tune a photo on

    impostor = await consenting_candidate(client, world.exam_id, "1002")
    refused = await client.post(
        "/v1/me/verification", content=photo_bytes("impostor_1"), headers=image_headers(impostor)
    )
    assert refused.status_code == 200, refused.text
    result = refused.json()
    assert result["match"] is False
    assert not set(result) & SCORES, result
    assert (result["attempt"], result["attempts_left"], result["status"]) == (1, 2, "enrolled")

    # The template and the live frame of the failed attempt are in the region; the
    # Redis record holds object keys and the model id, no vector and no picture.
    cid = world.candidate_ids["1002"]
    stored = sorted(str(o["Key"]) for o in await runtime.regional.list(world.exam_id, "face/"))
    assert f"{world.exam_id}/face/{cid}/template.bin" in stored
    evidence = await runtime.regional.list(world.exam_id, f"evidence/{cid}/")
    assert len(evidence) == 1
    record = await runtime.redis.hgetall(keys.face_record_key(world.exam_id, cid))
    assert set(record) >= {b"template", b"model", b"enrolled_at", b"status", b"attempts"}
    assert all(len(value) < 200 for value in record.values())

    again = await client.post(
        "/v1/me/verification", content=photo_bytes("person_a_2"), headers=image_headers(genuine)
    )
    assert again.status_code == 409
    assert again.json()["reason"] == "already_verified"


async def test_two_faces_or_none_are_refused_and_cost_no_attempt(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["2001"]}, with_proctors=False)
    two = jpeg(side_by_side(photo("person_a_2"), photo("person_b_1")))
    nobody = jpeg(faceless())
    for body, reason in ((two, "multiple_faces"), (nobody, "no_face")):
        refused = await enrol(client, world, "2001", body)
        assert refused.status_code == 422, refused.text
        assert refused.json()["reason"] == reason
    assert await runtime.regional.list(world.exam_id) == []

    assert (await enrol(client, world, "2001", photo_bytes("person_b_1"))).status_code == 200
    headers = image_headers(await consenting_candidate(client, world.exam_id, "2001"))
    for body, reason in ((two, "multiple_faces"), (nobody, "no_face")):
        refused = await client.post("/v1/me/verification", content=body, headers=headers)
        assert refused.status_code == 422, refused.text
        assert refused.json()["reason"] == reason
    status = (await client.get("/v1/me/verification", headers=headers)).json()
    assert (status["attempts"], status["status"]) == (0, "enrolled")
    cid = world.candidate_ids["2001"]
    assert await runtime.regional.list(world.exam_id, f"evidence/{cid}/") == []


async def test_candidates_enrol_themselves_only_before_the_exam_and_once(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    now = datetime.now(UTC)
    later = {"starts_at": (now + timedelta(days=1)).isoformat(),
             "ends_at": (now + timedelta(days=1, hours=2)).isoformat()}  # fmt: skip
    world = await new_exam(
        client, runtime, {"r1": ["2101"]}, with_proctors=False, candidate_enrolment=True, **later
    )
    headers = image_headers(await consenting_candidate(client, world.exam_id, "2101"))
    enrolled = await client.put("/v1/me/face", content=photo_bytes("person_a_1"), headers=headers)
    assert enrolled.status_code == 200, enrolled.text
    assert enrolled.json()["status"] == "enrolled"
    again = await client.put("/v1/me/face", content=photo_bytes("person_b_1"), headers=headers)
    assert again.status_code == 409
    assert again.json()["reason"] == "already_enrolled"
    cid = world.candidate_ids["2101"]
    seen = await client.get(
        f"/v1/exams/{world.exam_id}/candidates/{cid}/face", headers=world.organiser
    )
    assert (seen.json()["enrolled"], seen.json()["status"]) == (True, "enrolled")

    started = await new_exam(
        client, runtime, {"r1": ["2102"]}, with_proctors=False, candidate_enrolment=True
    )
    closed = await client.put(
        "/v1/me/face",
        content=photo_bytes("person_a_1"),
        headers=image_headers(await consenting_candidate(client, started.exam_id, "2102")),
    )
    assert closed.json()["reason"] == "enrolment_closed"
    # Logins open half an hour before the start: this exam starts in ten minutes.
    soon = {"starts_at": (now + timedelta(minutes=10)).isoformat(),
            "ends_at": (now + timedelta(hours=2)).isoformat()}  # fmt: skip
    organised = await new_exam(client, runtime, {"r1": ["2103"]}, with_proctors=False, **soon)
    refused = await client.put(
        "/v1/me/face",
        content=photo_bytes("person_a_1"),
        headers=image_headers(await consenting_candidate(client, organised.exam_id, "2103")),
    )
    assert refused.status_code == 403
    assert refused.json()["reason"] == "candidate_enrolment_off"
    assert await runtime.regional.list(started.exam_id) == []
    assert await runtime.regional.list(organised.exam_id) == []


async def test_parallel_verifications_spend_no_more_than_the_attempts(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """20 requests at once with 3 attempts: 3 reach the model and are counted, 17 are refused."""
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["2201"]}, face_attempts=3)
    assert (await enrol(client, world, "2201", photo_bytes("person_a_1"))).status_code == 200
    headers = image_headers(await consenting_candidate(client, world.exam_id, "2201"))
    body = photo_bytes("impostor_1")
    answers = await asyncio.gather(
        *(client.post("/v1/me/verification", content=body, headers=headers) for _ in range(20))
    )
    decided = [a.json() for a in answers if a.status_code == 200]
    refused = Counter((a.status_code, a.json()["reason"]) for a in answers if a.status_code != 200)
    assert len(decided) == 3, (decided, refused)
    assert sorted(r["attempt"] for r in decided) == [1, 2, 3]
    assert all(r["match"] is False and not set(r) & SCORES for r in decided)
    # Refused while the three ran, or after the last one opened the review.
    assert set(refused) <= {(409, "no_attempts_left"), (409, "review_pending")}, refused
    assert sum(refused.values()) == 17
    cid = world.candidate_ids["2201"]
    assert len(await runtime.regional.list(world.exam_id, f"evidence/{cid}/")) == 3
    status = (await client.get("/v1/me/verification", headers=headers)).json()
    assert (status["attempts"], status["attempts_left"], status["status"]) == (3, 0, "review")
    # The proctor's review keeps the scores of all three frames.
    base = f"/v1/exams/{world.exam_id}/rooms/r1/face-reviews"
    (review,) = (await client.get(base, headers=world.proctors["r1"])).json()["reviews"]
    assert [type(frame["score"]) for frame in review["live"]] == [float] * 3


async def test_a_kept_enrolment_photo_is_stored_without_exif_gps(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(
        client, runtime, {"r1": ["2301"]}, with_proctors=False, keep_enrolment_photo=True
    )
    sent = with_gps(photo_bytes("person_a_1"))
    enrolled = await enrol(client, world, "2301", sent)
    assert enrolled.status_code == 200, enrolled.text
    assert enrolled.json()["photo_kept"] is True
    cid = world.candidate_ids["2301"]
    record: Any = await runtime.redis.hget(keys.face_record_key(world.exam_id, cid), "photo")
    stored = await runtime.regional.get(world.exam_id, record.decode())
    assert_no_metadata(stored)
    assert pixel_gap(stored, sent) < 3
