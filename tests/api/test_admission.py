"""A full gateway process refuses more work at the door (`api.limits.AdmissionMiddleware`):
503 `gateway_busy` with Retry-After before the route runs, probes still answered, a
long stream counted only until its answer starts, and staff answered in places of
their own while others are refused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from infra.settings import Settings
from infra.tokens import Claims, sign
from tests.support import held
from tests.support.factories import auth, new_staff


@pytest.fixture(scope="module", autouse=True)
def routes(app: FastAPI) -> None:
    held.add_held_routes(app)


@pytest.fixture
def gate() -> Iterator[asyncio.Event]:
    event = held.Gate.closed()
    yield event
    event.set()


async def test_a_full_gateway_refuses_at_the_door_and_takes_work_again(
    app: FastAPI, settings: Settings, gate: asyncio.Event
) -> None:
    with held.admission_limit(app) as limit:
        async with held.many_connections(settings, limit + 8) as http:
            holding = await held.fill(http, limit)
            refused_before = held.refused()

            answer = await http.post("/test-work", json={"text": "refused"})
            assert answer.status_code == 503, answer.text
            assert answer.headers["content-type"].startswith("application/problem+json")
            assert answer.headers["retry-after"] == "1"
            assert answer.json()["reason"] == "gateway_busy"
            assert "refused" not in held.RAN  # nothing ran: sending it again is safe
            assert held.refused() == refused_before + 1
            # Probes and scrapes are answered whatever the load.
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/metrics")).status_code == 200

            gate.set()
            assert [r.status_code for r in await asyncio.gather(*holding)] == [200] * limit
            again = await http.post("/test-work", json={"text": "again"})
            assert again.status_code == 200, again.text
            assert held.RAN[-1] == "again"


async def test_a_stream_counts_only_until_its_answer_starts(
    app: FastAPI, settings: Settings, gate: asyncio.Event
) -> None:
    with held.admission_limit(app) as limit:
        async with (
            held.many_connections(settings, limit + 8) as http,
            asyncio.TaskGroup() as streams,
        ):
            started = asyncio.Semaphore(0)

            async def watch() -> None:
                async with http.stream("GET", "/test-stream") as response:
                    assert response.status_code == 200
                    started.release()
                    async for _ in response.aiter_bytes():
                        pass

            for _ in range(limit):
                streams.create_task(watch())
            for _ in range(limit):
                await asyncio.wait_for(started.acquire(), 60)
            # `limit` streams are open, none of them waiting for its answer.
            admitted = await http.post("/test-work", json={"text": "beside streams"})
            assert admitted.status_code == 200, admitted.text
            gate.set()


def _token(settings: Settings, role: Any, key: bytes | None = None, ttl: float = 600) -> str:
    claims = Claims(
        sid="admission-test", sub="someone", role=role, exam=None, exp=time.time() + ttl
    )
    return sign(claims, key or settings.token_signing_key.get_secret_value().encode())


async def test_staff_are_answered_in_places_of_their_own_while_others_are_refused(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings, gate: asyncio.Event
) -> None:
    username, proctor = await new_staff(client, app.state.runtime, "proctor", "busy")
    others = {
        "no token": httpx.Headers(),
        "a candidate": auth(_token(settings, "candidate")),
        "a staff token of another key": auth(_token(settings, "proctor", b"not the key")),
        "an expired staff token": auth(_token(settings, "proctor", ttl=-1)),
    }
    with held.admission_limit(app, staff_reserve=2) as limit:
        async with held.many_connections(settings, limit + 8) as http:
            holding = await held.fill(http, limit)
            refused_before = held.refused("others")
            for who, headers in others.items():
                answer = await http.post("/test-work", json={"text": who}, headers=headers)
                assert answer.status_code == 503, f"{who}: {answer.text}"
                assert answer.json()["reason"] == "gateway_busy"
            assert held.refused("others") == refused_before + len(others)

            # The proctor's console goes on working: a real staff route, answered in full.
            me = await http.get("/v1/staff/me", headers=proctor)
            assert me.status_code == 200, me.text
            assert me.json()["username"] == username
            # The reserve is a bound too: two staff requests held fill it.
            staff_refused = held.refused("staff")
            staff_held = await held.fill(http, 2, headers=proctor)
            answer = await http.post(
                "/test-work", json={"text": "staff, one too many"}, headers=proctor
            )
            assert answer.status_code == 503, answer.text
            assert held.refused("staff") == staff_refused + 1
            assert not set(held.RAN) & {*others, "staff, one too many"}

            gate.set()
            await asyncio.gather(*holding, *staff_held)


def test_the_gateway_is_bounded_as_configured(app: FastAPI, settings: Settings) -> None:
    layer = held.admission(app)
    assert layer.limit == settings.gateway_max_waiting_requests
    assert layer.staff_reserve == settings.gateway_staff_reserved_requests > 0
