"""Gaps the organiser console and help requests left (issues #25, #26): a cancelled exam is
told only to a right candidate pair, once the login budget is spent; a room's event stream
ends when its holder loses the room (a proctor taken off it, a chief proctor off the exam)
within the recheck interval; the help budget is a setting, under its own key."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
from fastapi import FastAPI

from core import keys
from infra.settings import Settings
from tests.accounts.test_login import runtime_of
from tests.api.test_exhaustion import configured
from tests.conftest import http_client
from tests.support.factories import assigned_staff, joined_candidate, new_exam

# A source of its own: these wrong pairs spend no other test's login budget.
SOURCE = "127.0.0.61"


async def test_a_cancelled_exam_is_told_only_to_a_right_pair(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    runtime = runtime_of(app)
    cancelled = await new_exam(client, runtime, {"r1": ["6001"]}, with_proctors=False)
    live = await new_exam(client, runtime, {"r1": ["6001"]}, with_proctors=False)
    refused = await client.post(
        f"/v1/exams/{cancelled.exam_id}/cancel", headers=cancelled.organiser
    )
    assert refused.status_code == 200, refused.text

    async with http_client(settings, SOURCE) as stranger:

        async def login(exam_id: str, number: str) -> httpx.Response:
            return await stranger.post(
                "/v1/sessions", json={"exam_no": exam_id, "candidate_no": number}
            )

        unknown_there = await login(cancelled.exam_id, "9999")
        unknown_live = await login(live.exam_id, "9999")
        known_there = await login(cancelled.exam_id, "6001")
    # An exam id and a made-up number learn what they learn of a live exam: nothing.
    assert unknown_there.status_code == unknown_live.status_code == 401, unknown_there.text
    assert unknown_there.json() == unknown_live.json()
    assert unknown_there.json()["reason"] == "wrong_credentials"
    # ... and the guess was paid for, as on any exam.
    pair = keys.login_failures_pair_key(runtime.exams.candidate_id(cancelled.exam_id, "9999"))
    assert await runtime.redis.get(pair) == b"1"
    assert (known_there.status_code, known_there.json()["reason"]) == (403, "exam_cancelled")


async def _username(client: httpx.AsyncClient, headers: httpx.Headers) -> str:
    me = await client.get("/v1/staff/me", headers=headers)
    assert me.status_code == 200, me.text
    name: str = me.json()["username"]
    return name


async def test_a_room_stream_ends_when_its_holder_loses_the_room(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["6101"]})
    exam, org = world.exam_id, world.organiser
    await joined_candidate(client, exam, "6101")
    proctor = world.proctors["r1"]
    proctor_name = await _username(client, proctor)
    chief_name, chief = await assigned_staff(client, world, "chief-proctor")
    url = f"/v1/exams/{exam}/rooms/r1/events"
    lines: dict[str, list[str]] = {"proctor": [], "chief": [], "organiser": []}
    async with contextlib.AsyncExitStack() as streams:
        with configured(runtime, sse_recheck_seconds=1.0):
            opened = {}
            for who, headers in (("proctor", proctor), ("chief", chief), ("organiser", org)):
                response = await streams.enter_async_context(
                    client.stream("GET", url, headers=headers, timeout=None)
                )
                assert response.status_code == 200, who
                opened[who] = response.aiter_lines()

        async def read(who: str, until: str) -> None:
            async for line in opened[who]:
                lines[who].append(line)
                if until in line:
                    return

        # Each stream is live (it has sent the room's history) before access changes.
        await asyncio.gather(*(read(who, "event: joined") for who in opened))
        off_room = await client.delete(
            f"/v1/exams/{exam}/rooms/r1/proctors/{proctor_name}", headers=org
        )
        assert off_room.status_code == 204, off_room.text
        off_exam = await client.delete(f"/v1/exams/{exam}/staff/{chief_name}", headers=org)
        assert off_exam.status_code == 204, off_exam.text
        # Within a recheck and a blocking read of the journal, not at the stream's end.
        await asyncio.wait_for(
            asyncio.gather(
                read("proctor", "room_access_ended"), read("chief", "room_access_ended")
            ),
            10,
        )
        # The organiser still sees the room: their stream goes on.
        said = await client.post(
            f"/v1/exams/{exam}/rooms/r1/messages", json={"text": "still here"}, headers=org
        )
        assert said.status_code == 201, said.text
        await asyncio.wait_for(read("organiser", "still here"), 10)
    for who in ("proctor", "chief"):
        assert "event: end" in lines[who], who
    assert not any("event: end" in line for line in lines["organiser"])
    # The ended streams gave their places back.
    for name in (proctor_name, chief_name):
        assert await runtime.redis.zcard(keys.staff_streams_key(name)) == 0


async def test_the_help_budget_is_a_setting_under_its_own_key(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["6201"]})
    cid = world.candidate_ids["6201"]
    candidate = await joined_candidate(client, world.exam_id, "6201")
    with configured(runtime, help_requests_per_minute=2):
        for _ in range(2):
            asked = await client.post("/v1/me/help", json={"kind": "hand"}, headers=candidate)
            assert asked.status_code == 201, asked.text
        over = await client.post("/v1/me/help", json={"kind": "hand"}, headers=candidate)
    assert (over.status_code, over.json()["reason"]) == (429, "help_limit")
    assert int(over.headers["retry-after"]) >= 1
    assert await runtime.redis.get(keys.help_rate_key(world.exam_id, cid)) is not None
