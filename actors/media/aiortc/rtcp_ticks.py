"""RTCP reports of a media shard's sessions, sent on shared ticks.

aiortc's senders and receivers each send their RTCP report (SR or RR, with
SDES) from their own loop, `asyncio.sleep(0.5 + random.random())` apart, so a
media shard with N sessions wakes up N times a second for reports alone. A
wakeup is what costs here: on the machines we measured, a timer that fires
alone costs 84 us of CPU with `time.sleep` and 200 us with asyncio's loop
(Firecracker VMs), more than the report it sends. `install` (called by
`rtc.install(shared_rtcp_ticks=True)`, which every `Forwarder` calls) gives
aiortc's sender and receiver modules a stand-in for `random` whose `random()` adds the time to
the next `TICK_S` tick of the loop's clock: the reports of every session due
in the same quarter second go out in one wakeup. It is process-wide: a shard's
process serves media only. Clients keep aiortc's timing, as browsers do.

A session still reports every 0.5 to 1.75 s, at a random point of that range
(RFC 3550 section 6.2's randomisation keeps the participants of one session
apart; here each session has two). A quarter-second tick, rather than one a
second, keeps a shard of thousands of sessions from sending all its reports in
one burst that would hold its forwarding up.
"""

from __future__ import annotations

import asyncio
import math
import random
from types import ModuleType
from typing import Final

TICK_S: Final = 0.25
BASE_INTERVAL_S: Final = (
    0.5  # what aiortc adds to `random.random()` (checked in actors.media.aiortc.rtc)
)


class TickedRandom:
    """Stands in for the `random` module inside aiortc's RTCP loops."""

    def random(self) -> float:
        """A uniform [0, 1) draw, lengthened to end the RTCP interval on a tick."""
        start = asyncio.get_running_loop().time() + BASE_INTERVAL_S
        due = start + random.random()
        return math.ceil(due / TICK_S) * TICK_S - start


def install(module: ModuleType, name: str) -> None:
    """Make `module.<name>` (its `random` module) a `TickedRandom` (idempotent)."""
    if not isinstance(getattr(module, name), TickedRandom):
        setattr(module, name, TickedRandom())
