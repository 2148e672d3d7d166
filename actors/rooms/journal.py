"""Room journals: a Redis Stream per room, written only by the room's current owner.

Ownership is fenced: taking a room over bumps its epoch, and an append carries
the writer's `shard#epoch`, checked inside the same Lua script that appends.
So two shards that both believe they own a room (in the middle of a
rebalance, or a zombie of a restarted actor) can never both write; the loser
gets `NotOwner` and drops the room. Appends are idempotent by event id, so an
actor call retried after a crash does not journal twice.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from core import keys
from core.rooms import NotOwner
from infra.redis import text

DEDUPE_SECONDS = 600
SNAPSHOT_EVERY = 1000
# Recent history kept for resuming event streams; older events live in snapshots.
STREAM_MAXLEN = 50_000

# KEYS: owner, stream, then one de-duplication key per event; ARGV: fence, dedupe
# seconds, stream maxlen, then the events. All or nothing for the fence check.
_APPEND = """
local owner = redis.call('GET', KEYS[1])
if owner ~= ARGV[1] then return redis.error_reply('NOT_OWNER ' .. tostring(owner)) end
local ids = {}
for i = 4, #ARGV do
  local dedupe = KEYS[i - 1]
  local id = redis.call('GET', dedupe)
  if not id then
    id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'e', ARGV[i])
    redis.call('SET', dedupe, id, 'EX', ARGV[2])
  end
  ids[#ids + 1] = id
end
return ids
"""

_TAKE_OVER = """
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '#' .. epoch)
return epoch
"""


def event_order(event_id: str) -> tuple[int, int]:
    """Stream ids compare as (milliseconds, sequence), never as strings."""
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


class Journal:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._append = redis.register_script(_APPEND)
        self._take_over = redis.register_script(_TAKE_OVER)

    async def take_over(self, room_key: str, shard: str) -> str:
        epoch = await self._take_over(
            keys=[keys.room_owner_key(room_key), keys.room_owner_epoch_key(room_key)],
            args=[shard],
        )
        return f"{shard}#{int(epoch)}"

    async def owner(self, room_key: str) -> str | None:
        raw = await self._redis.get(keys.room_owner_key(room_key))
        return text(raw) if raw else None

    async def append(
        self, room_key: str, fence: str, events: Sequence[dict[str, Any]]
    ) -> list[str]:
        """Append `events` in order in one round trip; an event whose id was already
        journaled (a retried call) gets its stored id back instead of a second entry."""
        dedupes = [keys.room_event_id_key(room_key, event["eid"]) for event in events]
        try:
            raw = await self._append(
                keys=[keys.room_owner_key(room_key), keys.room_events_key(room_key), *dedupes],
                args=[fence, DEDUPE_SECONDS, STREAM_MAXLEN, *map(json.dumps, events)],
            )
        except ResponseError as exc:
            if str(exc).startswith("NOT_OWNER"):
                raise NotOwner(f"{room_key} is owned elsewhere now", room=room_key) from None
            raise
        return [text(event_id) for event_id in raw]

    async def save_snapshot(self, room_key: str, snapshot: dict[str, Any]) -> None:
        await self._redis.set(keys.room_snapshot_key(room_key), json.dumps(snapshot))

    async def load_snapshot(self, room_key: str) -> dict[str, Any] | None:
        raw = await self._redis.get(keys.room_snapshot_key(room_key))
        return json.loads(raw) if raw else None

    async def replay(
        self, room_key: str, after: str = "0-0", batch: int = 1000
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        cursor = after
        while True:
            entries: Any = await self._redis.xrange(
                keys.room_events_key(room_key), min=f"({cursor}", max="+", count=batch
            )
            for raw_id, fields in entries:
                cursor = text(raw_id)
                yield cursor, json.loads(fields[b"e"])
            if len(entries) < batch:
                return
