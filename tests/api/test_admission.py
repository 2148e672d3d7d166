"""A full gateway process refuses more work at the door (`api.limits.AdmissionMiddleware`):
503 `gateway_busy` with Retry-After before the route runs, probes still answered, and a
long stream counted only until its answer starts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from api.limits import AdmissionMiddleware
from infra.settings import Settings
from tests.support import held


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


def test_the_gateway_is_bounded_as_configured(app: FastAPI, settings: Settings) -> None:
    layer: Any = app.middleware_stack
    while not isinstance(layer, AdmissionMiddleware):
        layer = layer.app
    assert layer.limit == settings.gateway_max_waiting_requests
