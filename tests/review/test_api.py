"""The review API on the real stack: risk ranking from really journaled events, decisions
journaled into the room, the rubric's checks, the CSV export's escaping, and who may see
what (issue #26 item 5)."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest_asyncio
from fastapi import FastAPI
from redis.asyncio import Redis

from core import keys
from core.review import SEVERITY_POINTS
from tests.support.factories import (
    ExamWorld,
    Reviewers,
    assigned_reviewers,
    candidate_login,
    new_exam,
)
from tests.web.pages import runtime_of

RUBRIC = {
    "criteria": [
        {"id": "pitch", "label": {"zh": "音准", "en": "Pitch"}, "max_points": 10},
        {"id": "rhythm", "label": {"zh": "节奏", "en": "Rhythm"}, "max_points": 5},
    ]
}


@dataclass
class Scene:
    world: ExamWorld
    other: ExamWorld
    staff: Reviewers
    base: str

    def cid(self, number: str) -> str:
        return self.world.candidate_ids[number]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def scene(client: httpx.AsyncClient, app: FastAPI) -> AsyncIterator[Scene]:
    """An exam whose journals hold, per candidate: 8001 a high incident and a medium one a
    proctor dismissed; 8002 a face monitor's mismatch and a rejected face review; 8003 six
    minutes disconnected and a failed liveness challenge; 8004 (another room) nothing."""
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["8001", "8002", "8003"], "r2": ["8004"]})
    other = await new_exam(client, runtime, {"r1": ["9001"]})
    staff = await assigned_reviewers(client, world)
    scene = Scene(world, other, staff, f"/v1/exams/{world.exam_id}")
    proctor, r1 = world.proctors["r1"], f"{scene.base}/rooms/r1"
    for kind, severity in (("phone_seen", "high"), ("looked_away", "medium")):
        raised = await client.post(
            f"{r1}/incidents",
            json={"candidate": scene.cid("8001"), "type": kind, "severity": severity},
            headers=proctor,
        )
        assert raised.status_code == 201, raised.text
    dismissed = await client.post(
        f"{r1}/incidents/{raised.json()['event_id']}/review",
        json={"decision": "dismissed"},
        headers=proctor,
    )
    assert dismissed.status_code == 201, dismissed.text
    room = keys.room_key(world.exam_id, "r1")
    now = time.time()
    # As the face monitor, the face checks and the room's sweeper journal them.
    c2, c3 = scene.cid("8002"), scene.cid("8003")
    for event in (
        {"type": "incident", "cid": c2, "incident": "identity_mismatch", "severity": "high",
         "by": "face-monitor", "first_seen": now - 30},
        {"type": "face_review_requested", "cid": c2, "review": "0123456789abcdef"},
        {"type": "face_review", "cid": c2, "review": "0123456789abcdef", "decision": "rejected",
         "by": "someone"},
        {"type": "disconnected", "cid": c3, "at": now - 400},
        {"type": "joined", "cid": c3, "at": now - 40},
    ):  # fmt: skip
        await runtime.rooms.append(room, event)
    await runtime.redis.hset(
        keys.face_record_key(world.exam_id, c3),
        mapping={"liveness": "no_movement", "liveness_at": now - 500},
    )
    yield scene


async def test_the_queue_ranks_candidates_by_risk_and_only_reviewers_see_it(
    client: httpx.AsyncClient, app: FastAPI, scene: Scene
) -> None:
    queue = f"{scene.base}/review/queue"
    ranked = await client.get(queue, headers=scene.staff.examiner)
    assert ranked.status_code == 200, ranked.text
    body = ranked.json()
    assert body["total"] == 4
    order = [c["candidate"] for c in body["candidates"]]
    assert order == [scene.cid(n) for n in ("8002", "8003", "8001", "8004")], body["candidates"]
    by_cid = {c["candidate"]: c for c in body["candidates"]}
    c1, c2, c3 = (by_cid[scene.cid(n)] for n in ("8001", "8002", "8003"))
    assert (c1["incidents"], c1["score"]) == ({"high": 1}, SEVERITY_POINTS["high"])
    assert (c2["face_mismatches"], c2["face_reviews_rejected"], c2["score"]) == (1, 1, 27)
    assert 355 <= c3["disconnected_seconds"] <= 365
    assert c3["liveness_failed"]
    assert c3["score"] == 6 + 6
    assert by_cid[scene.cid("8004")]["score"] == 0
    page = await client.get(f"{queue}?offset=2&limit=2", headers=scene.staff.chief)
    assert [c["candidate"] for c in page.json()["candidates"]] == order[2:]
    too_many = await client.get(f"{queue}?limit=101", headers=scene.staff.chief)
    assert too_many.status_code == 422

    # A proctor of the exam (live rooms only) and a candidate are refused; an examiner of
    # another exam learns nothing of this one, nor of its candidates through their own.
    proctor = await client.get(queue, headers=scene.world.proctors["r1"])
    assert (proctor.status_code, proctor.json()["reason"]) == (403, "reviewers_only")
    candidate = await candidate_login(client, scene.world.exam_id, "8004")
    assert (await client.get(queue, headers=candidate)).status_code == 403
    outsider = await assigned_reviewers(client, scene.other)
    refused = await client.get(queue, headers=outsider.examiner)
    assert (refused.status_code, refused.json()["reason"]) == (404, "exam_not_found")
    session = f"/review/candidates/{scene.cid('8001')}/session"
    stranger = await client.get(
        f"/v1/exams/{scene.other.exam_id}{session}", headers=outsider.examiner
    )
    assert (stranger.status_code, stranger.json()["reason"]) == (404, "candidate_not_found")
    mine = await client.get(f"{scene.base}{session}", headers=scene.staff.examiner)
    assert mine.status_code == 200, mine.text
    segment = f"{scene.base}/review/candidates/{scene.cid('8001')}/recordings/{'0' * 32}-00000.webm"
    missing = await client.get(segment, headers=scene.staff.examiner)
    assert (missing.status_code, missing.json()["reason"]) == (404, "recording_not_found")
    live_only = await client.get(segment, headers=scene.world.proctors["r1"])
    assert (live_only.status_code, live_only.json()["reason"]) == (403, "reviewers_only")
    kinds = [(m["kind"], m.get("status")) for m in mine.json()["markers"]]
    assert kinds == [("incident", "open"), ("incident", "dismissed")]


async def test_decisions_are_journaled_with_their_history_and_notes_sealed(
    client: httpx.AsyncClient, app: FastAPI, scene: Scene
) -> None:
    runtime = runtime_of(app)
    cid = scene.cid("8002")
    url = f"{scene.base}/review/candidates/{cid}/decision"
    bad = await client.post(url, json={"decision": "expelled"}, headers=scene.staff.chief)
    assert bad.status_code == 422
    assert not await runtime.redis.exists(keys.review_decisions_key(scene.world.exam_id))
    note = "Wang Fang sat in for the candidate"
    first = await client.post(
        url, json={"decision": "voided", "note": note}, headers=scene.staff.chief
    )
    assert first.status_code == 201, first.text
    assert (first.json()["by"], first.json()["note"]) == (scene.staff.chief_name, note)
    second = await client.post(
        url, json={"decision": "warning", "note": "on appeal"}, headers=scene.staff.examiner
    )
    assert second.status_code == 201, second.text

    room = keys.room_events_key(keys.room_key(scene.world.exam_id, "r1"))
    journaled = [
        entry
        for _, entry in await _events(runtime.redis, room)
        if entry["type"] == "review_decision"
    ]
    assert [(e["cid"], e["decision"], e["by"]) for e in journaled] == [
        (cid, "voided", scene.staff.chief_name),
        (cid, "warning", scene.staff.examiner_name),
    ]
    assert all("note" not in e for e in journaled)
    stored = await runtime.redis.hget(keys.review_decisions_key(scene.world.exam_id), cid)
    assert stored is not None
    assert b"Wang Fang" not in stored

    session = await client.get(
        f"{scene.base}/review/candidates/{cid}/session", headers=scene.staff.examiner
    )
    body = session.json()
    assert body["decision"]["decision"] == "warning"
    assert body["decision"]["event_id"] == second.json()["event_id"]
    assert [(h["decision"], h["note"]) for h in body["history"]] == [
        ("voided", note),
        ("warning", "on appeal"),
    ]
    pending = await client.get(
        f"{scene.base}/review/queue?status=pending", headers=scene.staff.chief
    )
    assert cid not in [c["candidate"] for c in pending.json()["candidates"]]
    assert pending.json()["total"] == 3


async def test_the_rubric_checks_scores_and_nothing_bad_is_stored(
    client: httpx.AsyncClient, app: FastAPI, scene: Scene
) -> None:
    runtime = runtime_of(app)
    exam = scene.world.exam_id
    rubric = f"{scene.base}/rubric"
    cid = scene.cid("8001")
    scores = f"{scene.base}/review/candidates/{cid}/scores"
    early = await client.put(scores, json={"scores": {"pitch": 1}}, headers=scene.staff.examiner)
    assert (early.status_code, early.json()["reason"]) == (409, "no_rubric")
    examiner_rubric = await client.put(rubric, json=RUBRIC, headers=scene.staff.examiner)
    assert (examiner_rubric.status_code, examiner_rubric.json()["reason"]) == (
        403,
        "organisers_only",
    )
    twice = {"criteria": [RUBRIC["criteria"][0], RUBRIC["criteria"][0]]}
    duplicate = await client.put(rubric, json=twice, headers=scene.world.organiser)
    assert (duplicate.status_code, duplicate.json()["reason"]) == (422, "duplicate_criterion")
    assert not await runtime.redis.exists(keys.review_rubric_key(exam))
    put = await client.put(rubric, json=RUBRIC, headers=scene.world.organiser)
    assert put.status_code == 200, put.text
    assert (await client.get(rubric, headers=scene.staff.examiner)).json() == RUBRIC

    for sheet, reason in (
        ({"pitch": 8, "rhythm": 3, "tone": 1}, "unknown_criterion"),
        ({"pitch": 11, "rhythm": 3}, "score_out_of_range"),
        ({"pitch": 8, "rhythm": -1}, "score_out_of_range"),
        ({"pitch": 8}, "missing_criterion"),
    ):
        refused = await client.put(scores, json={"scores": sheet}, headers=scene.staff.examiner)
        assert (refused.status_code, refused.json()["reason"]) == (422, reason), sheet
    assert not await runtime.redis.exists(keys.review_scores_key(exam))
    chief = await client.put(
        scores, json={"scores": {"pitch": 8, "rhythm": 3}}, headers=scene.staff.chief
    )
    assert (chief.status_code, chief.json()["reason"]) == (403, "examiners_only")
    comment = "-1 for the ending"
    scored = await client.put(
        scores,
        json={"scores": {"pitch": 8, "rhythm": 3.5}, "comment": comment},
        headers=scene.staff.examiner,
    )
    assert scored.status_code == 200, scored.text
    assert scored.json()["total"] == 11.5
    session = await client.get(
        f"{scene.base}/review/candidates/{cid}/session", headers=scene.staff.examiner
    )
    [sheet] = session.json()["sheets"]
    assert (sheet["examiner"], sheet["points"], sheet["comment"]) == (
        scene.staff.examiner_name,
        {"pitch": 8, "rhythm": 3.5},
        comment,
    )


async def test_the_export_escapes_formulas_and_names_candidates_for_organisers_only(
    client: httpx.AsyncClient, app: FastAPI, scene: Scene
) -> None:
    cid = scene.cid("8003")
    decided = await client.post(
        f"{scene.base}/review/candidates/{cid}/decision",
        json={"decision": "cleared", "note": '=HYPERLINK("x","y")'},
        headers=scene.staff.chief,
    )
    assert decided.status_code == 201, decided.text
    put = await client.put(f"{scene.base}/rubric", json=RUBRIC, headers=scene.world.organiser)
    assert put.status_code == 200, put.text
    for comment in ("@SUM(A1)", "+1", "\tTAB", "\rCR"):
        scored = await client.put(
            f"{scene.base}/review/candidates/{cid}/scores",
            json={"scores": {"pitch": 1, "rhythm": 1}, "comment": comment},
            headers=scene.staff.examiner,
        )
        assert scored.status_code == 200, scored.text
        rows = await _export(client, scene, scene.world.organiser)
        [row] = [r for r in rows if r["candidate"] == cid]
        assert row["comment"] == f"'{comment}"
    assert row["decision_note"] == '\'=HYPERLINK("x","y")'
    assert (row["candidate_no"], row["name"], row["decision"]) == (
        "8003",
        "Candidate 8003",
        "cleared",
    )
    assert (row["pitch"], row["rhythm"], row["total"]) == ("1.0", "1.0", "2.0")

    chief = await _export(client, scene, scene.staff.chief)
    assert "name" not in chief[0]
    assert "candidate_no" not in chief[0]
    assert {r["candidate"] for r in chief} == set(scene.world.candidate_ids.values())
    examiner = await client.get(f"{scene.base}/review/export.csv", headers=scene.staff.examiner)
    assert (examiner.status_code, examiner.json()["reason"]) == (403, "exporters_only")


async def _export(
    client: httpx.AsyncClient, scene: Scene, headers: httpx.Headers
) -> list[dict[str, str]]:
    response = await client.get(f"{scene.base}/review/export.csv", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))


async def _events(redis: Redis, key: str) -> list[tuple[str, dict[str, Any]]]:
    entries: Any = await redis.xrange(key)
    return [(k.decode(), json.loads(v[b"e"])) for k, v in entries]
