"""Issue #25, item 4: a candidate raises a hand or messages the proctor (`/v1/me/help`).

Each request is journaled in the candidate's own room (a message's text sealed); bad bodies
are refused with a reason and journal nothing; the budget answers 429 `help_limit` with
Retry-After; staff may not use the route, a candidate before the start may not either, and
one exam's candidate never reaches another exam's room.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from core import keys, room_text
from tests.accounts.test_login import runtime_of
from tests.support.factories import candidate_login, joined_candidate, new_exam
from tests.support.journal import room_journal


async def _help_entries(app: FastAPI, exam: str, room: str) -> list[tuple[str, dict[str, Any]]]:
    journal = await room_journal(runtime_of(app).redis, keys.room_key(exam, room))
    return [(event_id, event) for event_id, event in journal if event["type"].startswith("help")]


async def _help_events(app: FastAPI, exam: str, room: str) -> list[dict[str, Any]]:
    return [event for _, event in await _help_entries(app, exam, room)]


async def test_help_is_journaled_in_the_candidates_room_and_bounded(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["4001"], "r2": ["4002"]})
    other = await new_exam(client, runtime, {"r1": ["4001"]})
    exam, cid = world.exam_id, world.candidate_ids["4001"]
    candidate = await joined_candidate(client, exam, "4001")

    raised = await client.post("/v1/me/help", json={"kind": "hand"}, headers=candidate)
    assert raised.status_code == 201, raised.text
    asked = await client.post(
        "/v1/me/help", json={"kind": "message", "text": "  my calculator died  "}, headers=candidate
    )
    assert asked.status_code == 201, asked.text
    lowered = await client.delete("/v1/me/help", headers=candidate)
    assert lowered.status_code == 200, lowered.text
    events = await _help_events(app, exam, "r1")
    # The message's text is journaled sealed with the exam's key (`core.room_text`).
    assert room_text.SEALED_TEXT in events[1]
    assert "text" not in events[1]
    events = [await room_text.opened(runtime.exams.keys, exam, e) for e in events]
    assert [{k: e.get(k) for k in ("type", "cid", "kind", "text")} for e in events] == [
        {"type": "help", "cid": cid, "kind": "hand", "text": None},
        {"type": "help", "cid": cid, "kind": "message", "text": "my calculator died"},
        {"type": "help_lowered", "cid": cid, "kind": None, "text": None},
    ]
    ids = [raised.json()["event_id"], asked.json()["event_id"], lowered.json()["event_id"]]
    assert ids == [event_id for event_id, _ in await _help_entries(app, exam, "r1")]
    # Nothing in the other room of the exam, nor in the other exam's room of the same name.
    assert await _help_events(app, exam, "r2") == []
    assert await _help_events(app, other.exam_id, "r1") == []

    # The proctor answers through the room's messages; the candidate's view shows it.
    answer = await client.post(
        f"/v1/exams/{exam}/rooms/r1/messages",
        json={"to": cid, "text": "a spare is on its way"},
        headers=world.proctors["r1"],
    )
    assert answer.status_code == 201, answer.text
    view = (await client.get("/v1/me/room", headers=candidate)).json()
    assert [m["text"] for m in view["messages"]] == ["a spare is on its way"]

    bad: list[tuple[dict[str, Any], int, str]] = [
        ({"kind": "message"}, 422, "text_required"),
        ({"kind": "message", "text": "   "}, 422, "invalid_input"),
        ({"kind": "message", "text": "x" * 501}, 422, "invalid_input"),
        ({"kind": "hand", "text": "hello"}, 422, "text_not_allowed"),
        ({"kind": "shout"}, 422, "invalid_input"),
        ({"kind": "hand", "to": "someone"}, 422, "invalid_input"),
    ]
    for body, status, reason in bad:
        refused = await client.post("/v1/me/help", json=body, headers=candidate)
        assert refused.status_code == status, (body, refused.text)
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["reason"] == reason, (body, refused.text)
    assert len(await _help_events(app, exam, "r1")) == 3

    # Staff may never use the route.
    for headers in (world.proctors["r1"], world.organiser):
        staff = await client.post("/v1/me/help", json={"kind": "hand"}, headers=headers)
        assert staff.status_code == 403, staff.text
        assert staff.json()["reason"] == "candidates_only"
        assert (await client.delete("/v1/me/help", headers=headers)).status_code == 403
    assert len(await _help_events(app, exam, "r1")) == 3

    # The budget: three spent above, the rest now, then 429 with nothing journaled.
    budget = runtime_of(app).settings.help_requests_per_minute
    for _ in range(budget - 3):
        spent = await client.post("/v1/me/help", json={"kind": "hand"}, headers=candidate)
        assert spent.status_code == 201, spent.text
    limited = await client.post("/v1/me/help", json={"kind": "hand"}, headers=candidate)
    assert limited.status_code == 429, limited.text
    assert limited.json()["reason"] == "help_limit"
    assert int(limited.headers["retry-after"]) > 0
    assert (await client.delete("/v1/me/help", headers=candidate)).status_code == 429
    assert len(await _help_events(app, exam, "r1")) == budget
    # Another candidate's budget is their own.
    neighbour = await joined_candidate(client, exam, "4002")
    theirs = await client.post("/v1/me/help", json={"kind": "hand"}, headers=neighbour)
    assert theirs.status_code == 201, theirs.text
    assert [e["cid"] for e in await _help_events(app, exam, "r2")] == [world.candidate_ids["4002"]]


async def test_no_help_before_the_start_or_without_consent(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    starts = datetime.now(UTC) + timedelta(minutes=10)
    world = await new_exam(
        client,
        runtime_of(app),
        {"r1": ["4101"]},
        starts_at=starts.isoformat(),
        ends_at=(starts + timedelta(hours=1)).isoformat(),
    )
    candidate = await candidate_login(client, world.exam_id, "4101")
    unconsented = await client.post("/v1/me/help", json={"kind": "hand"}, headers=candidate)
    assert unconsented.status_code == 403, unconsented.text
    assert unconsented.json()["reason"] == "consent_required"
    consent = await client.post("/v1/me/consent", json={"policy_version": "1"}, headers=candidate)
    assert consent.status_code == 204, consent.text
    early = await client.post("/v1/me/help", json={"kind": "hand"}, headers=candidate)
    assert early.status_code == 403, early.text
    assert early.json()["reason"] == "not_started"
    assert await _help_events(app, world.exam_id, "r1") == []
