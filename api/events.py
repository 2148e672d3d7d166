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

Help requests and messages carry their text sealed in the journal (`core.room_text`):
each is opened with the exam's data key before it is sent, so a frame's data is the
event as it was written.

Each stream holds a lease in its staff member's set (`StreamLeases`): at most
`sse_streams_per_staff` at once, over all their sessions and gateways (429
`too_many_streams` beyond), renewed while the stream lives, so that one a crashed
gateway left behind lapses by itself. Every `sse_recheck_seconds` the stream asks
whether its session still exists and its holder may still see the room (the room
scope's own check, `api.security.check_room`), and ends when either fails: a logout, a
proctor taken off the room or a chief proctor off the exam closes it within that time,
not at the stream's end (`max_seconds`), since it would go on showing the room's
candidates and incidents to someone who may no longer see them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from starlette.requests import Request

from actors.rooms.journal import PRESENCE_MAXLEN, event_order
from api.runtime import Runtime
from api.security import RoomScope, check_room, request_token
from core import keys, room_text
from infra.errors import NotFound, RateLimited, Unauthenticated
from infra.redis import REDIS_DOWN, text

_BLOCK_MS = 5000
_BATCH = 500
STREAM_ID = r"^\d{1,20}-\d{1,20}$"
OpenText = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
# Why a stream ended before its time (the `end` event's `reason`).
SESSION_ENDED = "session_ended"
ROOM_ACCESS_ENDED = "room_access_ended"


def _frame(event_id: str, kind: str, data: str) -> bytes:
    return f"id: {event_id}\nevent: {kind}\ndata: {data}\n\n".encode()


# KEYS[1]: the member's streams (stream id -> lease end). ARGV: now, lease end, cap, id.
# One script, so that concurrent opens cannot both take the last place.
_OPEN_STREAM = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) - tonumber(ARGV[1])) + 1)
return 1
"""


class StreamLeases:
    """The open event streams of one staff member, across sessions and gateways."""

    def __init__(self, redis: Redis, username: str, cap: int, recheck_seconds: float) -> None:
        self.redis = redis
        self.key = keys.staff_streams_key(username)
        self.cap = cap
        # Outlives two missed renewals (each after a recheck, which may follow a full
        # blocking read): only a stream that is really gone lapses.
        self.lease_seconds = 2 * recheck_seconds + 2 * _BLOCK_MS / 1000
        self.stream_id = secrets.token_hex(8)

    async def open(self) -> None:
        now = time.time()
        args: list[float | int | str] = [now, now + self.lease_seconds, self.cap, self.stream_id]
        taken = await self.redis.register_script(_OPEN_STREAM)(keys=[self.key], args=args)
        if not int(taken):
            raise RateLimited(
                f"at most {self.cap} room event streams may be open at once",
                reason="too_many_streams",
                retry_after=math.ceil(self.lease_seconds),
            )

    async def renew(self) -> None:
        await self.redis.zadd(self.key, {self.stream_id: time.time() + self.lease_seconds}, xx=True)

    async def close(self) -> None:
        await self.redis.zrem(self.key, self.stream_id)


async def room_events(
    redis: Redis,
    room_key: str,
    last_event_id: str,
    is_disconnected: Callable[[], Awaitable[bool]],
    max_seconds: float,
    *,
    refusal: Callable[[], Awaitable[str | None]],
    recheck_seconds: float,
    lease: StreamLeases,
    open_text: OpenText,
) -> AsyncIterator[bytes]:
    """The stream's frames; `lease` has been opened and is closed when the stream ends.
    Every `recheck_seconds`, `refusal` says why the stream must end now (the `end` event's
    reason), or None. `open_text` opens an event's sealed text (`core.room_text`)."""
    try:
        yield b"retry: 1000\n\n"
        try:
            frames = _frames(
                redis, room_key, last_event_id, is_disconnected, max_seconds,
                refusal=refusal, recheck_seconds=recheck_seconds, lease=lease,
                open_text=open_text,
            )  # fmt: skip
            async for frame in frames:
                yield frame
        except REDIS_DOWN:
            yield b": hot state unavailable; reconnect\n\n"
    finally:
        # When the client goes, the response's task is cancelled inside this generator,
        # and any await here would be cancelled too: shielded, the place is given back.
        await asyncio.shield(_give_back(lease))


async def _give_back(lease: StreamLeases) -> None:
    with contextlib.suppress(*REDIS_DOWN):
        await lease.close()


async def _frames(
    redis: Redis,
    room_key: str,
    last_event_id: str,
    is_disconnected: Callable[[], Awaitable[bool]],
    max_seconds: float,
    *,
    refusal: Callable[[], Awaitable[str | None]],
    recheck_seconds: float,
    lease: StreamLeases,
    open_text: OpenText,
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
    # A blocking read no longer than the recheck interval, so that it bounds how late
    # a logout is noticed.
    block_ms = max(1, min(_BLOCK_MS, int(recheck_seconds * 1000)))
    next_check = time.monotonic() + recheck_seconds
    while time.monotonic() < deadline:
        if await is_disconnected():
            return
        if time.monotonic() >= next_check:
            reason = await refusal()
            if reason is not None:
                yield _frame(cursor, "end", json.dumps({"reason": reason}))
                return
            await lease.renew()
            next_check = time.monotonic() + recheck_seconds
        # One cursor for both streams: their ids are one sequence (`actors.rooms.journal`).
        batches: Any = await redis.xread(
            {evidence: cursor, presence: cursor}, count=_BATCH, block=block_ms
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
            if room_text.is_sealed(event):
                event = await open_text(event)
            frames.append(_frame(cursor, event.get("type", "event"), json.dumps(event)))
        # One write per round, not one per event: a room's history after a reconnect
        # can be tens of thousands of events.
        yield b"".join(frames)


def _older(a: str, b: str) -> bool:
    return event_order(a) < event_order(b)


async def room_stream(
    runtime: Runtime,
    request: Request,
    room: RoomScope,
    cursor: str,
    max_seconds: float,
) -> AsyncIterator[bytes]:
    """A staff member's event stream of a room: its lease taken (or 429) before any byte."""
    settings = runtime.settings
    token = request_token(request)
    principal = room.principal
    lease = StreamLeases(
        runtime.redis, principal.name, settings.sse_streams_per_staff, settings.sse_recheck_seconds
    )
    await lease.open()

    async def refusal() -> str | None:
        try:
            await runtime.sessions.resolve(token)
        except Unauthenticated:
            return SESSION_ENDED
        try:
            # The principal the stream was opened with: a session's holder and role never
            # change (`Sessions.resolve` refuses a record that differs from its token).
            await check_room(runtime, principal, room.exam_id, room.room_id)
        except NotFound:
            return ROOM_ACCESS_ENDED
        return None

    return room_events(
        runtime.redis, room.key, cursor, request.is_disconnected, max_seconds,
        refusal=refusal, recheck_seconds=settings.sse_recheck_seconds, lease=lease,
        open_text=functools.partial(room_text.opened, runtime.exams.keys, room.exam_id),
    )  # fmt: skip
