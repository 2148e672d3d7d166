"""Issue #25, item 1: the exam's schedule.

Logins open `login_opens_minutes_before` the start (30 by default), but joining and
publishing wait for the start (403 `not_started`); a first join after
`late_cutoff_minutes` (15) is refused `too_late` until a proctor readmits the
candidate; at the end the next heartbeat ends the session (403 `exam_over`), and
nothing is allowed after it. An organiser extends the exam, or gives one candidate
extra minutes, which move their late cut-off and their end. Each refusal stores
nothing. Times are seconds away, so the tests wait seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from core import keys
from tests.accounts.test_login import runtime_of
from tests.support.factories import ExamWorld, auth, new_exam

# Seconds from now to a cut-off or an end: room for the set-up on a loaded machine.
MARGIN = 10
OFFER = "v=0\r\n"  # never read: the schedule refuses before the offer is parsed


def _at(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


async def _exam(
    client: httpx.AsyncClient, app: FastAPI, numbers: list[str], starts: str, ends: str
) -> ExamWorld:
    return await new_exam(client, runtime_of(app), {"r1": numbers}, starts_at=starts, ends_at=ends)


async def _login(client: httpx.AsyncClient, exam: str, number: str) -> httpx.Response:
    return await client.post("/v1/sessions", json={"exam_no": exam, "candidate_no": number})


async def _consented(client: httpx.AsyncClient, exam: str, number: str) -> httpx.Headers:
    logged = await _login(client, exam, number)
    assert logged.status_code == 201, logged.text
    headers = auth(logged.json()["token"])
    consent = await client.post("/v1/me/consent", json={"policy_version": "1"}, headers=headers)
    assert consent.status_code == 204, consent.text
    return headers


async def _join(client: httpx.AsyncClient, headers: httpx.Headers) -> httpx.Response:
    return await client.post("/v1/me/join", json={"network": "wifi"}, headers=headers)


def _refused(response: httpx.Response, reason: str, status: int = 403) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["reason"] == reason, response.text
    assert "set-cookie" not in response.headers


async def _journal(app: FastAPI, exam: str) -> list[dict[str, Any]]:
    entries: Any = await runtime_of(app).redis.xrange(keys.room_events_key(f"{exam}/r1"))
    return [json.loads(fields[b"e"]) for _, fields in entries]


async def _marks(app: FastAPI, exam: str, cid: str) -> list[Any]:
    fields = ["joined_at", "admitted_at", "extra_minutes"]
    marks: list[Any] = await runtime_of(app).redis.hmget(keys.candidate_key(exam, cid), fields)
    return marks


async def _until(moment: datetime) -> None:
    await asyncio.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()) + 0.3)


async def test_an_early_candidate_logs_in_but_waits_for_the_start(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    world = await _exam(client, app, ["5001"], _at(minutes=10), _at(hours=2))
    exam, cid = world.exam_id, world.candidate_ids["5001"]
    headers = await _consented(client, exam, "5001")
    me = (await client.get("/v1/me", headers=headers)).json()
    schedule = me["schedule"]
    starts = datetime.fromisoformat(schedule["starts_at"])
    assert datetime.fromisoformat(schedule["opens_at"]) == starts - timedelta(minutes=30)
    assert datetime.fromisoformat(schedule["late_after"]) == starts + timedelta(minutes=15)
    assert datetime.fromisoformat(schedule["now"]) < starts

    refused = await _join(client, headers)
    _refused(refused, "not_started")
    assert refused.json()["starts_at"] == schedule["starts_at"]
    published = await client.post(
        "/v1/whip/me/camera",
        content=OFFER,
        headers={**headers, "content-type": "application/sdp"},
    )
    _refused(published, "not_started")
    # Nothing stored: no join in the room's journal, no mark on the candidate.
    assert [e for e in await _journal(app, exam) if e.get("cid") == cid] == []
    assert await _marks(app, exam, cid) == [None, None, None]
    assert (await client.get("/v1/me", headers=headers)).status_code == 200

    # Earlier than the window: refused, once the pair is right (a stranger learns nothing).
    closed = await _exam(client, app, ["5002"], _at(minutes=40), _at(hours=2))
    _refused(await _login(client, closed.exam_id, "5002"), "login_not_open")
    wrong = await _login(client, closed.exam_id, "9999")
    _refused(wrong, "wrong_credentials", 401)


async def test_a_late_candidate_is_refused_until_readmitted(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    # The late cut-off (15 minutes after the start) is seconds away.
    cutoff = datetime.now(UTC) + timedelta(seconds=MARGIN)
    world = await _exam(
        client, app, ["5101", "5102"], (cutoff - timedelta(minutes=15)).isoformat(), _at(hours=2)
    )
    exam, late_cid = world.exam_id, world.candidate_ids["5102"]
    on_time = await _consented(client, exam, "5101")
    assert (await _join(client, on_time)).status_code == 200
    await _until(cutoff)

    late = await _consented(client, exam, "5102")  # logging in late is allowed
    _refused(await _join(client, late), "too_late")
    published = await client.post(
        "/v1/whip/me/camera", content=OFFER, headers={**late, "content-type": "application/sdp"}
    )
    _refused(published, "too_late")
    assert await _marks(app, exam, late_cid) == [None, None, None]
    # Who joined in time comes back after the cut-off.
    assert (await _join(client, on_time)).status_code == 200

    # The console learns who would be refused, and readmits them by the readmit route.
    room = (await client.get(f"/v1/exams/{exam}/rooms/r1", headers=world.proctors["r1"])).json()
    assert list(room["late_after"]) == [late_cid]
    assert room["late_after"][late_cid] < room["now"]
    base = f"/v1/exams/{exam}/rooms/r1/candidates/{late_cid}"
    readmitted = await client.post(f"{base}/readmit", headers=world.proctors["r1"])
    assert readmitted.status_code == 201, readmitted.text
    joined = await _join(client, late)
    assert joined.status_code == 200, joined.text
    _refused(await client.post(f"{base}/readmit", headers=world.proctors["r1"]), "not_ended", 409)
    kinds = [e["type"] for e in await _journal(app, exam) if e.get("cid") == late_cid]
    assert kinds == ["readmitted", "joined"]


async def test_at_the_end_the_session_ends_and_nothing_is_allowed(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    end = datetime.now(UTC) + timedelta(seconds=MARGIN)
    world = await _exam(client, app, ["5201"], _at(minutes=-5), end.isoformat())
    exam, cid = world.exam_id, world.candidate_ids["5201"]
    headers = await _consented(client, exam, "5201")
    assert (await _join(client, headers)).status_code == 200
    assert (await client.post("/v1/me/heartbeat", json={}, headers=headers)).status_code == 200
    await _until(end)

    over = await client.post("/v1/me/heartbeat", json={}, headers=headers)
    _refused(over, "exam_over")
    # The beat ended the session: the token is dead, and the room says the candidate left.
    gone = await client.get("/v1/me", headers=headers)
    _refused(gone, "session_ended", 401)
    journal = [e for e in await _journal(app, exam) if e.get("cid") == cid]
    assert journal[-1]["type"] == "left"
    assert journal[-1]["why"] == "exam_over"
    # Logins stay open (the outcome, the candidate's rights); joining does not.
    again = await _consented(client, exam, "5201")
    _refused(await _join(client, again), "exam_over")
    assert (await _marks(app, exam, cid))[1:] == [None, None]


async def test_an_extension_moves_the_end(client: httpx.AsyncClient, app: FastAPI) -> None:
    end = datetime.now(UTC) + timedelta(seconds=MARGIN)
    world = await _exam(client, app, ["5301"], _at(minutes=-5), end.isoformat())
    exam = world.exam_id
    headers = await _consented(client, exam, "5301")
    assert (await _join(client, headers)).status_code == 200

    url = f"/v1/exams/{exam}/extend"
    proctor = await client.post(url, json={"minutes": 5}, headers=world.proctors["r1"])
    assert proctor.status_code == 403, proctor.text
    bad = await client.post(url, json={"minutes": 0}, headers=world.organiser)
    assert bad.status_code == 422, bad.text
    extended = await client.post(url, json={"minutes": 5}, headers=world.organiser)
    assert extended.status_code == 200, extended.text
    new_end = datetime.fromisoformat(extended.json()["ends_at"])
    assert new_end - datetime.fromisoformat(end.isoformat()) == timedelta(minutes=5)
    stored = (await client.get(f"/v1/exams/{exam}", headers=world.organiser)).json()
    assert datetime.fromisoformat(stored["ends_at"]) == new_end
    await _until(end)

    beat = await client.post("/v1/me/heartbeat", json={}, headers=headers)
    assert beat.status_code == 200, beat.text
    assert (await _login(client, exam, "5301")).status_code == 201
    journaled = [e for e in await _journal(app, exam) if e["type"] == "exam_extended"]
    organiser = (await client.get("/v1/staff/me", headers=world.organiser)).json()["username"]
    assert [(e["minutes"], e["by"]) for e in journaled] == [(5, organiser)]


async def test_an_accommodation_moves_one_candidates_cutoff_and_end(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    # Past the late cut-off already, and the end seconds away.
    end = datetime.now(UTC) + timedelta(seconds=MARGIN)
    world = await _exam(client, app, ["5401", "5402"], _at(minutes=-20), end.isoformat())
    exam, cid = world.exam_id, world.candidate_ids["5401"]
    url = f"/v1/exams/{exam}/candidates/{cid}/accommodation"
    unknown = f"/v1/exams/{exam}/candidates/nobody/accommodation"
    _refused(
        await client.put(unknown, json={"extra_minutes": 10}, headers=world.organiser),
        "candidate_not_found",
        404,
    )
    given = await client.put(url, json={"extra_minutes": 10}, headers=world.organiser)
    assert given.status_code == 201, given.text

    helped = await _consented(client, exam, "5401")
    schedule = (await client.get("/v1/me", headers=helped)).json()["schedule"]
    assert datetime.fromisoformat(schedule["ends_at"]) - end == timedelta(minutes=10)
    assert (await _join(client, helped)).status_code == 200  # 20 min late, cut-off 25
    other = await _consented(client, exam, "5402")
    _refused(await _join(client, other), "too_late")
    await _until(end)

    assert (await client.post("/v1/me/heartbeat", json={}, headers=helped)).status_code == 200
    assert (await _login(client, exam, "5401")).status_code == 201
    _refused(await _join(client, await _consented(client, exam, "5402")), "exam_over")
    journal = [e for e in await _journal(app, exam) if e["type"] == "accommodation"]
    assert [(e["cid"], e["extra_minutes"]) for e in journal] == [(cid, 10)]
