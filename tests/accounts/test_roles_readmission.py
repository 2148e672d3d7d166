"""Issue #22, finding 4: a proctor's "end" sticks until a proctor or the organiser readmits.

Ending a candidate ends their session at once (their token stops working) and
refuses their logins, 403 `ended_by_proctor`, until someone who may watch that
room readmits them; a wrong candidate number still answers as it always did.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from fastapi import FastAPI

from core import keys
from tests.accounts.test_login import runtime_of
from tests.support.factories import joined_candidate, new_exam


async def _journal(app: FastAPI, room: str) -> list[dict[str, Any]]:
    entries: Any = await runtime_of(app).redis.xrange(keys.room_events_key(room))
    return [json.loads(fields[b"e"]) for _, fields in entries]


async def _login(client: httpx.AsyncClient, exam_id: str, number: str) -> httpx.Response:
    return await client.post("/v1/sessions", json={"exam_no": exam_id, "candidate_no": number})


async def test_an_ended_candidate_stays_out_until_readmitted(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["3001"], "r2": ["3002"]})
    exam, cid = world.exam_id, world.candidate_ids["3001"]
    candidate = await joined_candidate(client, exam, "3001")
    base = f"/v1/exams/{exam}/rooms/r1/candidates/{cid}"

    ended = await client.post(f"{base}/end", headers=world.proctors["r1"])
    assert ended.status_code == 201, ended.text
    # The token the candidate holds is dead at once.
    gone = await client.get("/v1/me", headers=candidate)
    assert gone.status_code == 401
    assert gone.json()["reason"] == "session_ended"
    # And logging in again does not bring them back.
    for _ in range(2):
        refused = await _login(client, exam, "3001")
        assert refused.status_code == 403, refused.text
        assert refused.json()["reason"] == "ended_by_proctor"
        assert "set-cookie" not in refused.headers
    assert (await _login(client, exam, "9999")).json()["reason"] == "wrong_credentials"

    # Only someone who may watch the room readmits: not the proctor of another room.
    other_room = await client.post(f"{base}/readmit", headers=world.proctors["r2"])
    assert other_room.status_code == 404, other_room.text
    assert (await _login(client, exam, "3001")).status_code == 403
    readmitted = await client.post(f"{base}/readmit", headers=world.organiser)
    assert readmitted.status_code == 201, readmitted.text
    again = await client.post(f"{base}/readmit", headers=world.proctors["r1"])
    assert again.status_code == 409, again.text
    assert again.json()["reason"] == "not_ended"

    back = await joined_candidate(client, exam, "3001")
    assert (await client.get("/v1/me", headers=back)).status_code == 200
    journal = [e for e in await _journal(app, f"{exam}/r1") if e.get("cid") == cid]
    kinds = [e["type"] for e in journal]
    assert kinds[kinds.index("ended") :][:3] == ["ended", "readmitted", "joined"]
    organiser = (await client.get("/v1/staff/me", headers=world.organiser)).json()["username"]
    assert journal[kinds.index("readmitted")]["by"] == organiser


async def test_a_proctor_of_the_room_readmits_too(client: httpx.AsyncClient, app: FastAPI) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["3101"]})
    exam, cid = world.exam_id, world.candidate_ids["3101"]
    base = f"/v1/exams/{exam}/rooms/r1/candidates/{cid}"
    proctor = world.proctors["r1"]
    assert (await client.post(f"{base}/end", headers=proctor)).status_code == 201
    assert (await _login(client, exam, "3101")).json()["reason"] == "ended_by_proctor"
    readmitted = await client.post(f"{base}/readmit", headers=proctor)
    assert readmitted.status_code == 201, readmitted.text
    assert (await _login(client, exam, "3101")).status_code == 201
