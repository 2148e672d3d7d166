"""The verifier pool grows with its queue, within its bounds, and shrinks back when idle."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest_asyncio
import ray

from actors.face_client import VerifierClient
from actors.face_settings import VerifierSettings
from infra.errors import Unavailable
from infra.settings import Settings
from infra.stack import LocalStack
from tests.face.conftest import jpeg, photo

POOL = "examday-face-scaling"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def verifiers(stack: LocalStack) -> AsyncIterator[VerifierClient]:
    verifier = VerifierSettings(
        pool_name=POOL,
        min_replicas=1,
        max_replicas=2,
        target_queue=2,
        scale_interval_s=0.5,
        scale_down_after_s=1.0,
        num_cpus=0.25,
    )
    settings: Settings = stack.settings.model_copy(update={"verifier": verifier})
    pool_client = VerifierClient(settings)
    try:
        yield pool_client
    finally:
        status = await pool_client.status()
        for name in [*status["replicas"], *status["starting"], POOL]:
            with contextlib.suppress(ValueError):
                ray.kill(ray.get_actor(name, namespace=settings.ray_namespace), no_restart=True)


async def replicas(client: VerifierClient) -> int:
    status = await client.status()
    return len(status["replicas"])


async def test_the_pool_scales_up_under_load_and_down_when_idle(
    verifiers: VerifierClient,
) -> None:
    client = verifiers
    frame = jpeg(photo("person_a_2"))
    assert (await client.analyse(frame)).faces  # the minimum: one replica, loaded
    assert await replicas(client) == 1

    stop = asyncio.Event()

    async def caller() -> None:
        while not stop.is_set():
            with contextlib.suppress(Unavailable):
                await client.analyse(frame)

    callers = [asyncio.create_task(caller()) for _ in range(12)]
    try:
        seen = []
        for _ in range(600):  # bounded: the second replica must load its models first
            seen.append(await replicas(client))
            if seen[-1] == 2:
                break
            await asyncio.sleep(0.2)
        assert max(seen) == 2
    finally:
        stop.set()
        await asyncio.gather(*callers)
    assert await replicas(client) <= 2  # never beyond max_replicas
    for _ in range(300):  # idle: back to the minimum after the drain
        if await replicas(client) == 1:
            break
        await asyncio.sleep(0.2)
    assert await replicas(client) == 1
    assert (await client.analyse(frame)).faces
