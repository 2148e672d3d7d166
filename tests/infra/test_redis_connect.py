"""Redis commands under a slow event loop: few turns of the loop a command, and a new
connection made while the loop is slow is not taken for Redis down.

In the login storm a saturated gateway's loop iterations last a second or more, the
pool opens connections as requests pile up, and a loopback connect takes two or three
iterations: with a 2 s connect timeout, 36 requests of one combined rehearsal failed
503 `hot_state_down` ("Timeout connecting to server") while Redis sat at 3 % of a core."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable

import redis.asyncio.connection as redis_connection

from infra.redis import REDIS_PY_ASYNCIO, connect
from infra.settings import Settings
from infra.stack import LocalStack

# Four iterations of a saturated gateway, as its lag histogram showed them (0.3-1.3 s).
SLOW_ITERATION_S = 1.2
SLOW_ITERATIONS = 4


async def test_a_connection_made_while_the_loop_is_slow_is_not_refused(
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


async def _turns_of_the_loop(awaitable: Awaitable[object]) -> int:
    """How many turns the event loop took while `awaitable` ran; each turn lasts long
    enough (5 ms) for a loopback reply to be there at the next."""
    loop = asyncio.get_running_loop()
    turns = 0
    done = False

    def turn() -> None:
        nonlocal turns
        if not done:
            turns += 1
            time.sleep(0.005)
            loop.call_soon(turn)

    loop.call_soon(turn)
    try:
        await awaitable
    finally:
        done = True
    return turns


async def test_a_command_is_written_without_turns_of_the_loop(
    stack: LocalStack, settings: Settings
) -> None:
    redis = connect(settings)
    try:
        await redis.ping()  # the connection is made and pooled
        # Written at once, read at the next turn: 4 turns with redis-py's write inside
        # Python 3.11's wait_for, a task of its own.
        assert await _turns_of_the_loop(redis.ping()) <= 2
        assert await _turns_of_the_loop(redis.set("turns-test", "1", ex=10)) <= 2
    finally:
        await redis.aclose()


def test_redis_py_still_writes_inside_wait_for() -> None:
    """The detail `infra.redis` relies on: were redis-py to write under a timeout scope
    of its own, its `wait_for` stand-in would do nothing and should go."""
    source = inspect.getsource(redis_connection.AbstractConnection.send_packed_command)
    assert "asyncio.wait_for(" in source
    assert hasattr(redis_connection, REDIS_PY_ASYNCIO)
