"""A new Redis connection made while the event loop is slow is not taken for Redis down.

In the login storm a saturated gateway's loop iterations last a second or more, the
pool opens connections as requests pile up, and a loopback connect takes two or three
iterations: with a 2 s connect timeout, 36 requests of one combined rehearsal failed
503 `hot_state_down` ("Timeout connecting to server") while Redis sat at 3 % of a core."""

from __future__ import annotations

import asyncio
import time

from infra.redis import connect
from infra.settings import Settings
from infra.stack import LocalStack

# Four iterations of a saturated gateway, as its lag histogram showed them (0.3-1.3 s).
SLOW_ITERATION_S = 1.2
SLOW_ITERATIONS = 4


async def test_a_connection_made_while_the_loop_is_slow_does_not_time_out(
    stack: LocalStack, settings: Settings
) -> None:
    redis = connect(settings)
    loop = asyncio.get_running_loop()
    iterations = 0

    def saturated_iteration() -> None:
        nonlocal iterations
        iterations += 1
        time.sleep(SLOW_ITERATION_S)  # the rest of the storm's work in this iteration
        if iterations < SLOW_ITERATIONS:
            loop.call_soon(saturated_iteration)

    loop.call_soon(saturated_iteration)
    try:
        assert await redis.ping()
    finally:
        await redis.aclose()
    assert iterations == SLOW_ITERATIONS  # the connect did wait through the slow loop
