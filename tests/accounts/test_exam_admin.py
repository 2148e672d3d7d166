"""Issue #25, item 2: what the organiser's console does to an exam, at the API.

An organiser edits an exam's title and times (an edit that makes no sense is refused with
a reason and stores nothing), sees every room's live overview, takes a proctor off a
room (their next request for it is 404) and a candidate off the exam (their session
ends, their identity record is deleted: they cannot log in again), and cancels the exam
(logins, joins and beats answer 403 `exam_cancelled`). Another organiser's exam answers
404 to all of it, and a proctor 403.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from core import keys
from tests.accounts.test_login import runtime_of
from tests.support.factories import (
    candidate_login,
    joined_candidate,
    new_exam,
    new_organiser,
    new_staff,
)


async def _journal(app: FastAPI, exam: str, room: str) -> list[dict[str, Any]]:
    entries: Any = await runtime_of(app).redis.xrange(keys.room_events_key(f"{exam}/{room}"))
    return [json.loads(fields[b"e"]) for _, fields in entries]


def _at(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


async def test_an_organiser_edits_watches_unassigns_removes_and_cancels(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["5001", "5002", "5003"], "r2": ["5004"]})
    exam, org = world.exam_id, world.organiser
    base = f"/v1/exams/{exam}"
    _, stranger = await new_organiser(client, runtime)
    chief_name, chief = await new_staff(client, runtime, "chief-proctor", "chief")
    present = await joined_candidate(client, exam, "5001")
    waiting = await candidate_login(client, exam, "5003")
    consent = await client.post("/v1/me/consent", json={"policy_version": "1"}, headers=waiting)
    assert consent.status_code == 204, consent.text
    before = (await client.get(base, headers=org)).json()

    # Another organiser's exam does not exist for them; a proctor may never use these.
    for method, path in [
        ("PATCH", base),
        ("POST", f"{base}/cancel"),
        ("GET", f"{base}/overview"),
        ("GET", f"{base}/candidates?room=r1"),
        ("DELETE", f"{base}/candidates/{world.candidate_ids['5002']}"),
        ("DELETE", f"{base}/rooms/r1/proctors/nobody-here"),
    ]:
        body = {"title": "x"} if method == "PATCH" else None
        answer = await client.request(method, path, json=body, headers=stranger)
        assert answer.status_code == 404, (path, answer.text)
        assert answer.json()["reason"] == "exam_not_found"
        answer = await client.request(method, path, json=body, headers=world.proctors["r1"])
        assert answer.status_code == 403, (path, answer.text)

    # Edits that make no sense: a reason each, and nothing stored.
    refusals = [
        ({"ends_at": before["starts_at"]}, 422, "ends_before_start"),
        ({"ends_at": _at(minutes=-1)}, 422, "ends_in_past"),
        ({"starts_at": _at(minutes=30)}, 409, "already_started"),
        ({"title": before["title"]}, 422, "nothing_to_change"),
        ({}, 422, "nothing_to_change"),
        ({"region": "eu-west"}, 422, "invalid_input"),
    ]
    for body, status, reason in refusals:
        refused = await client.patch(base, json=body, headers=org)
        assert (refused.status_code, refused.json()["reason"]) == (status, reason), body
    assert (await client.get(base, headers=org)).json() == before
    later = _at(hours=3)
    edited = await client.patch(base, json={"title": "Physics", "ends_at": later}, headers=org)
    assert edited.status_code == 200, edited.text
    assert edited.json()["title"] == "Physics"
    changed = [e for e in await _journal(app, exam, "r2") if e["type"] == "exam_changed"]
    moved = [datetime.fromisoformat(e["ends_at"]) for e in changed]
    assert moved == [datetime.fromisoformat(edited.json()["ends_at"])]

    # The overview: every room's presence, for the organiser and an assigned chief proctor.
    assert (await client.get(f"{base}/overview", headers=chief)).status_code == 404
    assigned = await client.put(f"{base}/staff/{chief_name}", headers=org)
    assert assigned.status_code == 204, assigned.text
    for who in (org, chief):
        seen = await client.get(f"{base}/overview", headers=who)
        assert seen.status_code == 200, seen.text
        rooms = {room["room"]: room for room in seen.json()["rooms"]}
        assert sorted(rooms) == ["r1", "r2"]
        r1 = rooms["r1"]
        assert (r1["roster"], r1["present"], r1["absent"], r1["disconnected"]) == (3, 1, 2, 0)
        assert (r1["incidents_open"], r1["face_reviews_pending"]) == (0, 0)
        assert seen.json()["totals"]["roster"] == 4
    paged = (await client.get(f"{base}/overview?after=r1", headers=org)).json()
    assert ([room["room"] for room in paged["rooms"]], paged["next"]) == (["r2"], None)
    proctor = rooms["r1"]["proctors"][0]
    named = await client.get(f"{base}/candidates?room=r1", headers=org)
    assert [c["candidate_no"] for c in named.json()["candidates"]] == ["5001", "5002", "5003"]

    # A proctor taken off the room: their next request for it is 404.
    assert (await client.get(f"{base}/rooms/r1", headers=world.proctors["r1"])).status_code == 200
    off = await client.delete(f"{base}/rooms/r1/proctors/{proctor}", headers=org)
    assert off.status_code == 204, off.text
    gone = await client.get(f"{base}/rooms/r1", headers=world.proctors["r1"])
    assert gone.status_code == 404
    again = await client.delete(f"{base}/rooms/r1/proctors/{proctor}", headers=org)
    assert again.json()["reason"] == "proctor_not_found"

    # A candidate under a legal hold stays; one taken off can no longer log in.
    held_cid, cid = world.candidate_ids["5001"], world.candidate_ids["5002"]
    hold = {"reference": "case-1", "reason": "appeal", "candidate": held_cid}
    assert (await client.post(f"{base}/holds", json=hold, headers=org)).status_code == 201
    kept = await client.delete(f"{base}/candidates/{held_cid}", headers=org)
    assert (kept.status_code, kept.json()["reason"]) == (409, "legal_hold")
    assert await runtime.exams.candidate(exam, held_cid) is not None
    removed = await client.delete(f"{base}/candidates/{cid}", headers=org)
    assert removed.status_code == 204, removed.text
    assert await runtime.redis.exists(keys.candidate_key(exam, cid)) == 0
    assert cid not in await runtime.exams.room_candidates(exam, "r1")
    assert (await runtime.exams.rooms(exam))["r1"] == 2
    login = await client.post("/v1/sessions", json={"exam_no": exam, "candidate_no": "5002"})
    assert login.json()["reason"] == "wrong_credentials"
    journal = await _journal(app, exam, "r1")
    assert {"type": "candidate_removed", "cid": cid} in [
        {k: e[k] for k in ("type", "cid")} for e in journal if e["type"] == "candidate_removed"
    ]
    assert any(e["type"] == "left" and e.get("why") == "removed" for e in journal)
    twice = await client.delete(f"{base}/candidates/{cid}", headers=org)
    assert twice.json()["reason"] == "candidate_not_found"

    # Cancelled: the live candidate is ended at their next beat, nobody joins or logs in.
    cancelled = await client.post(f"{base}/cancel", headers=org)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["cancelled_at"] is not None
    beat = await client.post("/v1/me/heartbeat", json={}, headers=present)
    assert (beat.status_code, beat.json()["reason"]) == (403, "exam_cancelled")
    assert (await client.get("/v1/me", headers=present)).status_code == 401
    join = await client.post("/v1/me/join", json={"network": "wifi"}, headers=waiting)
    assert (join.status_code, join.json()["reason"]) == (403, "exam_cancelled")
    login = await client.post("/v1/sessions", json={"exam_no": exam, "candidate_no": "5004"})
    assert (login.status_code, login.json()["reason"]) == (403, "exam_cancelled")
    for room in ("r1", "r2"):
        assert "exam_cancelled" in [e["type"] for e in await _journal(app, exam, room)]
    after_cancel: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", f"{base}/cancel", None),
        ("POST", f"{base}/extend", {"minutes": 5}),
        ("PATCH", base, {"title": "Chemistry"}),
    ]
    for method, path, body in after_cancel:
        refused = await client.request(method, path, json=body, headers=org)
        assert (refused.status_code, refused.json()["reason"]) == (409, "exam_cancelled"), path
    csv = {**org, "content-type": "text/csv"}
    roster = "exam_no,candidate_no,name,date_of_birth,room,guardian_consent\n"
    refused = await client.post(f"{base}/roster", content=roster, headers=csv)
    assert (refused.status_code, refused.json()["reason"]) == (409, "exam_cancelled")


async def test_an_exam_that_is_over_is_neither_edited_nor_cancelled(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    world = await new_exam(
        client,
        runtime_of(app),
        {"r1": ["5101"]},
        with_proctors=False,
        starts_at=_at(hours=-2),
        ends_at=_at(hours=-1),
    )
    base, org = f"/v1/exams/{world.exam_id}", world.organiser
    for method, path, body in [
        ("POST", f"{base}/cancel", None),
        ("PATCH", base, {"ends_at": _at(hours=1)}),
    ]:
        refused = await client.request(method, path, json=body, headers=org)
        assert (refused.status_code, refused.json()["reason"]) == (409, "exam_over"), path
    assert (await client.get(base, headers=org)).json()["cancelled_at"] is None
