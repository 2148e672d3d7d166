"""Server-Sent Events of a room, read straight from the room's journal.

The journal is two streams with one id sequence, evidence and heartbeats
(`actors.rooms.journal`); this merges them into one ordered stream of events.

The journal is the stream: an event id is its Redis Stream id, so a client
that reconnects with `Last-Event-ID` gets every event after it, with no gap
and no duplicate. A stream ends by itself after `max_seconds` (clients
reconnect, as EventSource does), and when the client goes away; and when Redis
goes away: the answer has begun, so it cannot turn into a 503 any more, and an
error would cut the connection mid-frame; an ended stream is reconnected to
(after `retry`), with `Last-Event-ID`, and that request gets the 503.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from actors.rooms.journal import PRESENCE_MAXLEN, event_order
from core import keys
from infra.redis import REDIS_DOWN, text

_BLOCK_MS = 5000
_BATCH = 500
STREAM_ID = r"^\d{1,20}-\d{1,20}$"


def _frame(event_id: str, kind: str, data: str) -> bytes:
    return f"id: {event_id}\nevent: {kind}\ndata: {data}\n\n".encode()


async def room_events(
    redis: Redis,
    room_key: str,
    last_event_id: str,
    is_disconnected: Callable[[], Awaitable[bool]],
    max_seconds: float,
) -> AsyncIterator[bytes]:
    yield b"retry: 1000\n\n"
    try:
        async for frame in _frames(redis, room_key, last_event_id, is_disconnected, max_seconds):
            yield frame
    except REDIS_DOWN:
        yield b": hot state unavailable; reconnect\n\n"


async def _frames(
    redis: Redis,
    room_key: str,
    last_event_id: str,
    is_disconnected: Callable[[], Awaitable[bool]],
    max_seconds: float,
) -> AsyncIterator[bytes]:
    evidence, presence = keys.room_events_key(room_key), keys.room_presence_key(room_key)
    cursor = last_event_id
    if cursor != "0-0" and await redis.xlen(presence) >= PRESENCE_MAXLEN:
        # Evidence is never trimmed by length; heartbeats are. Past the client's position:
        # it missed some presence, and must reload the room's state.
        oldest: Any = await redis.xrange(presence, count=1)
        if oldest and _older(cursor, text(oldest[0][0])):
            yield _frame(cursor, "reset", json.dumps({"reason": "history_trimmed"}))
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        if await is_disconnected():
            return
        # One cursor for both streams: their ids are one sequence (`actors.rooms.journal`).
        batches: Any = await redis.xread(
            {evidence: cursor, presence: cursor}, count=_BATCH, block=_BLOCK_MS
        )
        if not batches:
            yield b": keep-alive\n\n"
            continue
        entries = [(text(raw_id), fields) for _, got in batches for raw_id, fields in got]
        # A stream that filled its batch may have more before the other's last entries:
        # send only up to the earliest such horizon, and read the rest next round.
        full = [text(got[-1][0]) for _, got in batches if len(got) >= _BATCH]
        horizon = min(map(event_order, full)) if full else None
        frames = []
        for event_id, fields in sorted(entries, key=lambda entry: event_order(entry[0])):
            if horizon is not None and event_order(event_id) > horizon:
                break
            cursor = event_id
            event = json.loads(fields[b"e"])
            event.pop("eid", None)
            frames.append(_frame(cursor, event.get("type", "event"), json.dumps(event)))
        # One write per round, not one per event: a room's history after a reconnect
        # can be tens of thousands of events.
        yield b"".join(frames)


def _older(a: str, b: str) -> bool:
    return event_order(a) < event_order(b)
