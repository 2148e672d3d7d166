"""The progress line's counts over a fleet's shares (`loadtests.tally`)."""

from __future__ import annotations

import asyncio

from loadtests.journey import Recorder
from loadtests.tally import Counting, Tallies


async def refused(reason: str) -> tuple[bool, str]:
    return False, reason


async def test_the_last_error_is_the_fleets_latest_whichever_share_it_came_from() -> None:
    first, second = Recorder(), Recorder()
    counts = [Counting(0, first), Counting(1, second)]
    tallies = Tallies()
    await second.timed("c1", "login", refused("http_503 busy"))
    await asyncio.sleep(0.01)
    await first.timed("c2", "verify", refused("http_503 verifier_busy"))
    for counting in counts:
        tallies.take(counting.tally())
    assert "errors 2 (last: verify http_503 verifier_busy)" in tallies.text()

    await asyncio.sleep(0.01)
    await second.timed("c3", "client_logs", refused("TimeoutError"))
    for counting in counts:
        tallies.take(counting.tally())
    assert "errors 3 (last: client_logs TimeoutError)" in tallies.text()
