"""Evidence outlives traffic: a flood of heartbeats from one candidate cannot push a
room's incidents out of its SSE history or out of an authority's export, and heartbeats
over HTTP are limited per candidate (429 with Retry-After)."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
import zipfile
from typing import Any

import httpx
from fastapi import FastAPI

from actors.rooms.journal import event_order
from core import keys
from tests.accounts.test_login import runtime_of
from tests.support.factories import ExamWorld, joined_candidate, new_exam
from tests.support.sse import Event, read_events

# Over the old journal cap (`MAXLEN ~ 50_000`, heartbeats included) with room to spare.
FLOOD = 60_000
# Beats in flight at once: enough to fill the gateway's group commits (256 a call).
IN_FLIGHT = 2_000


async def _incident(client: httpx.AsyncClient, world: ExamWorld, cid: str, note: str) -> str:
    raised = await client.post(
        f"/v1/exams/{world.exam_id}/rooms/r1/incidents",
        json={"candidate": cid, "type": "phone_visible", "severity": "high", "note": note},
        headers=world.proctors["r1"],
    )
    assert raised.status_code == 201, raised.text
    event_id: str = raised.json()["event_id"]
    return event_id


async def test_a_heartbeat_flood_does_not_evict_incidents(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["1001", "1002"]})
    flooder, other = world.candidate_ids["1001"], world.candidate_ids["1002"]
    await joined_candidate(client, world.exam_id, "1001")
    await joined_candidate(client, world.exam_id, "1002")
    room = keys.room_key(world.exam_id, "r1")
    incidents = [await _incident(client, world, other, f"before {n}") for n in range(3)]

    # The flood goes through the gateway's own room client, the call `POST /v1/me/heartbeat`
    # makes: over HTTP that route now answers 429 long before 60,000 (tested below), and
    # 60,000 requests through uvicorn on a shared 2-core box take minutes, not seconds.
    async def beat(n: int) -> None:
        await runtime.rooms.heartbeat(room, flooder, "wifi", f"flood-{n}-{uuid.uuid4().hex}")

    for start in range(0, FLOOD, IN_FLIGHT):
        await asyncio.gather(*(beat(n) for n in range(start, min(start + IN_FLIGHT, FLOOD))))
        if start == FLOOD // 2:
            incidents.append(await _incident(client, world, other, "during"))
    incidents.append(await _incident(client, world, other, "after"))

    # An authority's export still holds every incident in the room's timeline.
    body = {"reference": "POLICE-7", "reason": "flood of heartbeats", "candidate": other}
    made = await client.post(
        f"/v1/exams/{world.exam_id}/exports", json=body, headers=world.organiser
    )
    assert made.status_code == 201, made.text
    archive = await client.get(made.json()["url"], headers=world.organiser)
    assert archive.status_code == 200
    with zipfile.ZipFile(io.BytesIO(archive.content)) as package:
        timeline = [
            json.loads(line) for line in package.read("timelines/r1.jsonl").decode().splitlines()
        ]
    assert [e["id"] for e in timeline if e["type"] == "incident"] == incidents
    assert timeline[0]["type"] == "joined"

    # Heartbeats are kept apart, capped; the evidence stream holds none of them.
    evidence: Any = await runtime.redis.xrange(keys.room_events_key(room))
    assert all(json.loads(fields[b"e"])["type"] != "heartbeat" for _, fields in evidence)
    assert await runtime.redis.xlen(keys.room_presence_key(room)) < FLOOD

    # So does the SSE history from the start, in order, with the heartbeats among them.
    url = f"/v1/exams/{world.exam_id}/rooms/r1/events"

    def reached_last(events: list[Event]) -> bool:
        return events[-1].id == incidents[-1]  # called after each event: look at the last

    events = await read_events(client, url, world.proctors["r1"], until=reached_last, within=120)
    streamed = [e.id for e in events if e.type == "incident"]
    assert streamed == incidents
    assert [e.data["note"] for e in events if e.type == "incident"] == [
        "before 0",
        "before 1",
        "before 2",
        "during",
        "after",
    ]
    assert any(e.type == "heartbeat" for e in events)
    order = [event_order(e.id) for e in events if e.id]
    assert order == sorted(set(order))  # one sequence over both streams, no duplicate
    joined = {e.data["cid"] for e in events if e.type == "joined"}
    assert joined == {flooder, other}  # joins survive too


async def test_http_heartbeats_are_limited_per_candidate(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["1001", "1002"]})
    flooder = await joined_candidate(client, world.exam_id, "1001")
    calm = await joined_candidate(client, world.exam_id, "1002")
    limit = runtime.settings.heartbeats_per_minute
    answers = [
        await client.post("/v1/me/heartbeat", json={"network": "wifi"}, headers=flooder)
        for _ in range(limit + 1)
    ]
    assert [a.status_code for a in answers[:limit]] == [200] * limit
    refused = answers[limit]
    assert refused.status_code == 429, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["reason"] == "too_many_heartbeats"
    assert int(refused.headers["Retry-After"]) >= 1
    # Per candidate: another candidate of the same room still beats.
    beat = await client.post("/v1/me/heartbeat", json={"network": "wifi"}, headers=calm)
    assert beat.status_code == 200, beat.text
    # A normal client (one beat every few seconds) stays far under the limit.
    assert limit >= 2 * 60 / 5
