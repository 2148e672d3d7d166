"""A burst at a verifier with a tiny queue: some 503 with Retry-After, no crash, no backlog."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest_asyncio
import ray
import uvicorn
from fastapi import FastAPI

from api.app import create_app
from infra.processes import free_port
from infra.settings import Settings
from infra.settings.face import VerifierSettings
from infra.stack import LocalStack
from tests.conftest import http_client
from tests.face.conftest import image_headers, photo_bytes, runtime_of
from tests.support.factories import new_exam

BURST = 12


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tiny(stack: LocalStack, app: FastAPI) -> AsyncIterator[tuple[FastAPI, Settings]]:
    """A second gateway whose verifier pool holds one frame at a time, on one replica."""
    tiny_verifier = VerifierSettings(
        pool_name="examday-face-tiny", max_queue=1, max_batch=1, min_replicas=1, max_replicas=1
    )
    settings = stack.settings.model_copy(
        update={"gateway_port": free_port(), "verifier": tiny_verifier}
    )
    application = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(application, host=settings.gateway_host, port=settings.gateway_port,
                       log_level="warning", lifespan="on")
    )  # fmt: skip
    task = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        assert not task.done(), "the second gateway did not start"
        await asyncio.sleep(0.05)
    try:
        yield application, settings
    finally:
        server.should_exit = True
        await task
        status = await runtime_of(application).face.verifier.status()
        for name in [*status["replicas"], tiny_verifier.pool_name]:
            ray.kill(ray.get_actor(name, namespace=settings.ray_namespace), no_restart=True)


async def test_a_burst_gets_some_503_with_retry_after_and_the_service_recovers(
    client: httpx.AsyncClient, app: FastAPI, tiny: tuple[FastAPI, Settings]
) -> None:
    tiny_app, settings = tiny
    numbers = [f"70{index:02d}" for index in range(BURST + 1)]
    world = await new_exam(client, runtime_of(app), {"r1": numbers}, with_proctors=False)
    headers = image_headers(world.organiser)
    body = photo_bytes("person_a_1")
    async with http_client(settings) as other:
        # The first call waits for the replica's models; the burst comes after.
        first = await other.put(
            f"/v1/exams/{world.exam_id}/candidates/{world.candidate_ids[numbers[0]]}/face",
            content=body,
            headers=headers,
        )
        assert first.status_code == 200, first.text
        answers = await asyncio.gather(
            *(
                other.put(
                    f"/v1/exams/{world.exam_id}/candidates/{world.candidate_ids[n]}/face",
                    content=body,
                    headers=headers,
                )
                for n in numbers[1:]
            )
        )
        statuses = Counter(answer.status_code for answer in answers)
        print("burst of", BURST, dict(statuses))
        assert set(statuses) <= {200, 503}
        assert statuses[200] >= 1
        assert statuses[503] >= 1
        for answer in answers:
            if answer.status_code == 503:
                assert answer.json()["reason"] == "verifier_busy"
                assert int(answer.headers["retry-after"]) >= 1
        # Refused enrolments stored nothing; the replica is alive and serves again.
        stored = await runtime_of(app).regional.list(world.exam_id)
        assert len(stored) == statuses[200] + 1
        retry = next(
            n for n, answer in zip(numbers[1:], answers, strict=True) if answer.status_code == 503
        )
        again = await other.put(
            f"/v1/exams/{world.exam_id}/candidates/{world.candidate_ids[retry]}/face",
            content=body,
            headers=headers,
        )
        assert again.status_code == 200, again.text
    load = await runtime_of(tiny_app).face.verifier.status()
    (replica,) = load["replicas"]
    assert replica.startswith("examday-face-tiny-")
