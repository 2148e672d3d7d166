"""A room's whole journal as the tests read it: both of its streams, merged by id.

Heartbeats live in the room's capped presence stream, everything else in its evidence
stream (`actors.rooms.journal`); a test that checks every acknowledged event reads both.
"""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

from actors.rooms.journal import event_order
from core import keys
from infra.redis import text


async def room_journal(redis: Redis, room: str) -> list[tuple[str, dict[str, Any]]]:
    """(event id, event) of every event of `room`, in the order of their ids."""
    found: list[tuple[str, dict[str, Any]]] = []
    for key in (keys.room_events_key(room), keys.room_presence_key(room)):
        entries: Any = await redis.xrange(key)
        found += [(text(raw_id), json.loads(fields[b"e"])) for raw_id, fields in entries]
    return sorted(found, key=lambda entry: event_order(entry[0]))
