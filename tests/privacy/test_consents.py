"""Consent gates on every route that collects personal data, the biometric consent, a
guardian's own link, withdrawals, and the retention of identity and consent records."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from cluster.privacy_cli import verify_regions
from core import keys
from infra.settings import Settings
from tests.ingest.helpers import ndjson, new_device, record
from tests.privacy.conftest import (
    bucket_versions,
    ended_exam,
    image_bytes,
    image_headers,
    joined_before_the_end,
    runtime_of,
    short_policy,
)
from tests.support.factories import candidate_login, new_exam


async def room_events(app: FastAPI, exam_id: str, room: str) -> list[dict[str, Any]]:
    entries: Any = await runtime_of(app).redis.xrange(keys.room_events_key(f"{exam_id}/{room}"))
    return [json.loads(fields[b"e"]) for _, fields in entries]


async def test_a_minor_without_a_guardian_collects_nothing_until_the_guardian_link(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    now = datetime.now(UTC)
    world = await new_exam(
        client,
        runtime,
        {"r1": ["2001", "1001"]},
        born={"2001": "2014-03-01"},
        candidate_enrolment=True,
        starts_at=(now + timedelta(hours=1)).isoformat(),
        ends_at=(now + timedelta(hours=3)).isoformat(),
    )
    minor = await candidate_login(client, world.exam_id, "2001")
    device = new_device()
    # Without the policy consent, and then without the guardian's, nothing is taken.
    attempts = (
        ("PUT", "/v1/me/face"),
        ("POST", "/v1/me/verification"),
        ("POST", "/v1/uploads/photos"),
        ("POST", "/v1/uploads/whiteboards"),
    )
    for expected in ("consent_required", "guardian_consent_required"):
        for method, path in attempts:
            refused = await client.request(
                method, path, content=image_bytes(), headers=image_headers(minor)
            )
            assert (refused.status_code, refused.json()["reason"]) == (403, expected), path
        refused = await client.post("/v1/me/liveness/challenges", headers=minor)
        assert refused.json()["reason"] == expected
        # Logs sent with their token are theirs too (their device's id, their sessions).
        logs = await client.post(
            "/v1/logs",
            content=ndjson([record(device)]),
            headers={"content-type": "application/x-ndjson", **minor},
        )
        assert (logs.status_code, logs.json()["reason"]) == (403, expected)
        given = await client.post("/v1/me/consent", json={"policy_version": "1"}, headers=minor)
        assert given.status_code == 204
    assert await bucket_versions(runtime.stores, "cn-north", f"{world.exam_id}/") == []
    for name in (keys.face_record_key, keys.candidate_devices_key):
        assert not await runtime.redis.exists(name(world.exam_id, world.candidate_ids["2001"]))

    # An adult has no guardian link to make; the minor's page makes one for the guardian.
    adult = await candidate_login(client, world.exam_id, "1001")
    assert (await client.post("/v1/me/guardian-link", headers=adult)).json()["reason"] == (
        "not_a_minor"
    )
    link = await client.post("/v1/me/guardian-link", headers=minor)
    assert link.status_code == 201, link.text
    url = link.json()["url"]
    assert url.startswith("/candidate/guardian.html#token=")
    token = url.split("#token=", 1)[1]
    shown = await client.post("/v1/guardian/policy", json={"token": token})
    assert shown.status_code == 200
    assert shown.json()["exam"]["title"] == "Mathematics"
    assert shown.json()["text"]["en"]
    consent = {"token": token, "accept": True}
    assert (await client.post("/v1/guardian/consent", json=consent)).status_code == 204
    used = await client.post("/v1/guardian/consent", json=consent)
    assert (used.status_code, used.json()["reason"]) == (404, "guardian_link_invalid")
    # The organiser's link works the same way; the record says how each consent came.
    made = await client.post(
        f"/v1/exams/{world.exam_id}/candidates/{world.candidate_ids['2001']}/guardian-link",
        headers=world.organiser,
    )
    assert made.status_code == 201
    records = await client.get(f"/v1/exams/{world.exam_id}/consents", headers=world.organiser)
    guardians = [r for r in records.json()["records"] if r["kind"] == "guardian"]
    assert [(g["value"], g["method"]) for g in guardians] == [("recorded", "link")]

    # Now the photo goes through; the face still waits for the biometric consent.
    shared = await client.post(
        "/v1/uploads/photos", content=image_bytes(), headers=image_headers(minor)
    )
    assert shared.status_code == 201, shared.text
    logs = await client.post(
        "/v1/logs",
        content=ndjson([record(device)]),
        headers={"content-type": "application/x-ndjson", **minor},
    )
    assert logs.status_code == 202, logs.text
    face = await client.put("/v1/me/face", content=image_bytes(), headers=image_headers(minor))
    assert (face.status_code, face.json()["reason"]) == (403, "biometric_consent_required")
    # The guardian withdraws: uploads stop again.
    withdrawn = await client.delete("/v1/me/consents/guardian", headers=minor)
    assert withdrawn.status_code == 200
    assert withdrawn.json()["meaning"]["en"]
    again = await client.post(
        "/v1/uploads/photos", content=image_bytes(), headers=image_headers(minor)
    )
    assert again.json()["reason"] == "guardian_consent_required"


async def test_withdrawing_biometric_consent_deletes_the_template_and_blocks_verification(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["1001"]}, require_face_verification=True)
    exam, cid = world.exam_id, world.candidate_ids["1001"]
    me = await candidate_login(client, exam, "1001")
    assert (
        await client.post("/v1/me/consent", json={"policy_version": "1"}, headers=me)
    ).status_code == 204
    bad = await client.post("/v1/me/consents/biometric", json={"allow": "yes"}, headers=me)
    assert bad.status_code == 422
    given = await client.post("/v1/me/consents/biometric", json={"allow": True}, headers=me)
    assert given.status_code == 204
    # A template and a face record as the face service writes them.
    template = await runtime.regional.put(exam, "face", cid, "template.bin", b"\x01" * 512)
    await runtime.redis.hset(
        keys.face_record_key(exam, cid),
        mapping={"template": template.key, "status": "enrolled", "attempts": 0},
    )
    assert (await client.get("/v1/me/policy", headers=me)).json()["biometric_consent"] == "b1"
    # Without face verification the join waits (the exam asks for it).
    refused = await client.post("/v1/me/join", json={"network": "wifi"}, headers=me)
    assert refused.json()["reason"] == "face_verification_required"

    withdrawn = await client.delete("/v1/me/consents/biometric", headers=me)
    assert withdrawn.status_code == 200, withdrawn.text
    assert "template" in withdrawn.json()["meaning"]["en"]
    assert withdrawn.json()["receipts"]
    assert await bucket_versions(runtime.stores, "cn-north", f"{exam}/face/{cid}/") == []
    assert not await runtime.redis.exists(keys.face_record_key(exam, cid))
    verify = await client.post(
        "/v1/me/verification", content=image_bytes(), headers=image_headers(me, "image/png")
    )
    assert (verify.status_code, verify.json()["reason"]) == (403, "biometric_consent_required")
    # The room's proctors are asked for a manual check, and the candidate joins without a face.
    checks = [e for e in await room_events(app, exam, "r1") if e["type"] == "manual_id_check"]
    assert [(e["cid"], e["why"]) for e in checks] == [(cid, "biometric_withdrawn")]
    joined = await client.post("/v1/me/join", json={"network": "wifi"}, headers=me)
    assert joined.status_code == 200, joined.text
    receipts = await client.get(f"/v1/exams/{exam}/retention/receipts", headers=world.organiser)
    deletions = [e["body"] for e in receipts.json()["entries"] if e["kind"] == "deletion"]
    assert [(d["policy_class"], d["subject"]) for d in deletions] == [("biometric_withdrawal", cid)]
    assert template.key in [o["key"] for o in deletions[0]["objects"]]

    # Withdrawing the policy consent ends the candidate's part: join is refused again.
    assert (await client.delete("/v1/me/consents/policy", headers=me)).status_code == 200
    again = await client.post("/v1/me/join", json={"network": "wifi"}, headers=me)
    assert again.json()["reason"] == "consent_required"
    assert (await client.delete("/v1/me/consents/sharing", headers=me)).status_code == 422
    third = await client.delete("/v1/me/consents/third-party", headers=me)
    assert third.status_code == 200
    kinds = [
        (r["kind"], r["value"])
        for r in (await client.get("/v1/me/consents", headers=me)).json()["records"]
    ]
    assert kinds == [
        ("policy", "1"),
        ("biometric", "granted:b1"),
        ("biometric", "withdrawn:b1"),
        ("policy", "withdrawn:1"),
        ("third_party", "withdrawn:1"),
    ]


async def test_identity_and_consent_records_go_when_their_period_ends(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    runtime = runtime_of(app)
    policy = short_policy() + [
        {"data_class": c, "trigger": "exam_end", "after_seconds": 1}
        for c in ("identity", "consents", "requests")
    ]
    world = await ended_exam(client, runtime, {"r1": ["1001", "1002"]}, retention=policy)
    exam = world.exam_id
    me = await joined_before_the_end(client, runtime, exam, "1001")
    filed = await client.post(
        "/v1/me/requests", json={"kind": "complaint", "text": "the room was loud"}, headers=me
    )
    assert filed.status_code == 201, filed.text
    # A device that sent logs with their token is tied to them: it goes with their identity.
    logged = await client.post(
        "/v1/logs",
        content=ndjson([record(new_device())]),
        headers={"content-type": "application/x-ndjson", **me},
    )
    assert logged.status_code == 202, logged.text
    cids = [world.candidate_ids[n] for n in ("1001", "1002")]
    names = [keys.candidate_key(exam, c) for c in cids] + [
        keys.candidate_devices_key(exam, cids[0]),
        keys.consents_key(exam),
        keys.rights_requests_key(exam),
    ]
    assert all([await runtime.redis.exists(n) for n in names])

    run = await client.post(f"/v1/exams/{exam}/retention/runs", headers=world.organiser)
    assert run.status_code == 200, run.text
    assert not any([await runtime.redis.exists(n) for n in names])
    assert await runtime.redis.exists(keys.exam_key(exam))  # the exam record's own period
    entries = (
        await client.get(f"/v1/exams/{exam}/retention/receipts", headers=world.organiser)
    ).json()["entries"]
    receipted = {
        (e["body"]["data_class"], k)
        for e in entries
        if e["kind"] == "deletion"
        for k in e["body"]["redis_keys"]
    }
    assert {("identity", keys.candidate_key(exam, c)) for c in cids} <= receipted
    assert ("consents", keys.consents_key(exam)) in receipted
    assert ("requests", keys.rights_requests_key(exam)) in receipted
    assert [r.ok for r in await verify_regions(settings, "cn-north")] == [True]
    # A receipt that lies (the record is back) is what `audit verify` reports.
    await runtime.redis.xadd(keys.consents_key(exam), {"r": "{}"})
    try:
        [report] = await verify_regions(settings, "cn-north")
        assert "not_deleted" in {f.kind for f in report.failures}
    finally:
        await runtime.redis.delete(keys.consents_key(exam))
