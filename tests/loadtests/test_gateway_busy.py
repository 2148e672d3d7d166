"""The load tester sends a request a full gateway refused at the door (503
`gateway_busy`) again after its Retry-After, as the pages do, and counts the retry
against the step it was sent for."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from infra.settings import Settings
from loadtests.journey import Recorder
from loadtests.parts import http_session
from tests.support import held


async def test_a_refused_step_is_sent_again_and_counted(app: FastAPI, settings: Settings) -> None:
    held.add_held_routes(app)
    gate = held.Gate.closed()
    recorder = Recorder()
    try:
        with held.admission_limit(app) as limit:
            async with (
                held.many_connections(settings, limit + 8) as http,
                http_session(settings.gateway_url, 1, recorder) as fleet,
            ):
                holding = await held.fill(http, limit)
                before = held.refused()

                async def work() -> tuple[bool, str]:
                    body = {"text": "from the fleet"}
                    async with fleet.post("/test-work", json=body) as answer:
                        return answer.status == 200, str(answer.status)

                step = asyncio.ensure_future(recorder.timed("candidate-1", "client_logs", work()))
                await held.until_refused(before, step)
                gate.set()
                await asyncio.gather(*holding)
                assert await asyncio.wait_for(step, 30)
    finally:
        gate.set()
    assert held.RAN.count("from the fleet") == 1
    assert recorder.busy_retries["client_logs"] >= 1
    [timed] = recorder.steps
    assert timed.ok
    assert timed.seconds >= 1.0  # the wait (Retry-After 1 s, jittered upwards) is part of it
