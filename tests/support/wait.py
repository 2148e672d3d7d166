"""The tests' one way to wait for something that happens in the background.

A condition may be a plain check (a counter the test can read) or a coroutine
(a question to a server); either is asked again until it holds or the time
is up, which fails the test.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


async def until(
    condition: Callable[[], bool | Awaitable[bool]], within: float = 10.0, every: float = 0.05
) -> None:
    """Wait for `condition`; fail if it does not hold within `within` seconds."""
    deadline = time.monotonic() + within
    while not await _holds(condition):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(every)


async def _holds(condition: Callable[[], bool | Awaitable[bool]]) -> bool:
    held = condition()
    if inspect.isawaitable(held):
        return await held
    return held
