"""A candidate who stays in rooms while a test moves them about, beating as a client does.

On a slow day a drill (a drain, a shard added and removed) outlasts the heartbeat timeout
(15 s), and the room's sweeper rightly marks a silent candidate disconnected: a test that
means "the rooms keep their candidates" keeps them beating.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence

from actors.rooms.client import RoomRouter

BEAT_EVERY_S = 2.0


@contextlib.asynccontextmanager
async def beating(rooms: RoomRouter, room_keys: Sequence[str], cid: str) -> AsyncIterator[None]:
    """`cid` beats in each of `room_keys` every `BEAT_EVERY_S` while the block runs; a beat
    that fails fails the block (a move must not refuse a candidate's beat)."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(BEAT_EVERY_S)
            for key in room_keys:
                await rooms.heartbeat(key, cid, "wifi", uuid.uuid4().hex)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        if task.done():
            task.result()  # raises what stopped the beats
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
