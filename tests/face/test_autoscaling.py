"""The verifier pool grows with its queue, within its bounds, and shrinks back when idle."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest_asyncio
import ray

from actors.face.client import VerifierClient
from actors.face.pool import target_replicas
from infra.errors import Unavailable
from infra.settings import Settings
from infra.settings.face import VerifierSettings
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


def test_no_replica_is_added_while_the_busy_ones_are_starved_of_cpu() -> None:
    config = VerifierSettings(min_replicas=1, max_replicas=3, target_queue=8)
    # 40 frames held by one replica that ran flat out: up to the maximum.
    assert target_replicas(config, 1, [(40, 0.95)]) == 3
    # The same backlog on a replica that got a fifth of a core: its node is saturated.
    assert target_replicas(config, 1, [(40, 0.2)]) == 1
    # Not measured yet (its first round), or idle ones with spare CPU: the queue decides.
    assert target_replicas(config, 1, [(40, None)]) == 3
    assert target_replicas(config, 2, [(20, 0.9), (0, 0.05)]) == 3
    # Starved, but below the minimum (a replica died): the minimum comes back.
    assert target_replicas(config.model_copy(update={"min_replicas": 2}), 1, [(40, 0.2)]) == 2
    # Scaling down is never held back, nor are GPU replicas, nor with the check off.
    assert target_replicas(config, 3, [(0, 0.1), (0, 0.1), (0, 0.1)]) == 1
    assert target_replicas(config, 1, [(40, 0.2)], gpus=True) == 3
    off = config.model_copy(update={"scale_up_min_cpu": 0.0})
    assert target_replicas(off, 1, [(40, 0.2)]) == 3
