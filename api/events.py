"""Server-Sent Events of a room, read straight from the room's journal.

The journal is the stream: an event id is its Redis Stream id, so a client
that reconnects with `Last-Event-ID` gets every event after it, with no gap
and no duplicate. A stream ends by itself after `max_seconds` (clients
reconnect, as EventSource does), and when the client goes away.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from actors.rooms.journal import event_order
from core import keys
from infra.redis import text

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
    key = keys.room_events_key(room_key)
    cursor = last_event_id
    yield b"retry: 1000\n\n"
    if cursor != "0-0":
        oldest: Any = await redis.xrange(key, count=1)
        if oldest and _older(cursor, text(oldest[0][0])):
            # Trimmed past the client's position: it must reload the room's state.
            yield _frame(cursor, "reset", json.dumps({"reason": "history_trimmed"}))
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        if await is_disconnected():
            return
        batches: Any = await redis.xread({key: cursor}, count=_BATCH, block=_BLOCK_MS)
        if not batches:
            yield b": keep-alive\n\n"
            continue
        for _stream, entries in batches:
            for raw_id, fields in entries:
                cursor = text(raw_id)
                event = json.loads(fields[b"e"])
                event.pop("eid", None)
                yield _frame(cursor, event.get("type", "event"), json.dumps(event))


def _older(a: str, b: str) -> bool:
    return event_order(a) < event_order(b)
