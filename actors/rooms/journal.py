"""Room journals: a Redis Stream per room, written only by the room's current owner.

Ownership is fenced: taking a room over bumps its epoch, and an append carries
the writer's `shard#epoch`, checked inside the same Lua script that appends.
So two shards that both believe they own a room (in the middle of a
rebalance, or a zombie of a restarted actor) can never both write; the loser
gets `NotOwner` and drops the room. Appends are idempotent by event id, so an
actor call retried after a crash does not journal twice.

An append also carries the stream id the writer last saw at the journal's tail,
checked in the same script: a Redis restarted from an AOF written `everysec` may
come back without its last second of events (the fence key may survive it), and
an append whose answer was lost leaves an event the writer never applied. Either
way the writer's room in memory no longer matches its journal, and it gets
`NotOwner` too, so it rebuilds the room from the journal before writing again.

A room has two streams with one id sequence: evidence (every event but heartbeats:
joins, leaves, incidents, messages, reviews, ends), never trimmed by length, and
presence (heartbeats), capped at `PRESENCE_MAXLEN`. One candidate beating tens of
thousands of times used to push a room's incidents out of a single capped journal,
and with them out of the SSE history, the exports for authorities and the retention
clock. The append script gives each event the next id after the later tail of both
streams, so merged by id they are one ordered history (`replay`, the SSE stream);
the tail above is that later tail, and the fence and tail checks cover both streams.
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
# Heartbeats kept for resuming event streams (far more than `SNAPSHOT_EVERY`, so that a
# rebuild replays none that were trimmed); older presence lives in snapshots.
PRESENCE_MAXLEN = 50_000
# Events that go to the capped presence stream: frequent, and restated by the next beat.
PRESENCE_EVENTS = frozenset({"heartbeat"})

# KEYS: owner, evidence stream, presence stream, then one de-duplication key per event;
# ARGV: fence, dedupe seconds, presence maxlen, the expected tail ('' not to check), then
# the events, each prefixed 'e' (evidence) or 'p' (presence). All or nothing for the fence
# and tail checks. Ids are made here, not by XADD's '*': a stream's '*' is only later than
# that stream's own tail, and the two streams must interleave in one order. TIME may be
# called since scripts replicate their effects (Redis >= 5).
_APPEND = """
local owner = redis.call('GET', KEYS[1])
if owner ~= ARGV[1] then return redis.error_reply('NOT_OWNER ' .. tostring(owner)) end
local function last_of(key)
  local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)[1]
  local ms, seq = string.match(last and last[1] or '0-0', '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local ms, seq = last_of(KEYS[2])
local p_ms, p_seq = last_of(KEYS[3])
if p_ms > ms or (p_ms == ms and p_seq > seq) then ms, seq = p_ms, p_seq end
if ARGV[4] ~= '' then
  local tail = string.format('%d-%d', ms, seq)
  if tail ~= ARGV[4] then return redis.error_reply('STALE_TAIL ' .. tail) end
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local ids = {}
for i = 5, #ARGV do
  local dedupe = KEYS[i - 1]
  local id = redis.call('GET', dedupe)
  if not id then
    if now_ms > ms then ms, seq = now_ms, 0 else seq = seq + 1 end
    id = string.format('%d-%d', ms, seq)
    local body = string.sub(ARGV[i], 2)
    if string.sub(ARGV[i], 1, 1) == 'p' then
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], id, 'e', body)
    else
      redis.call('XADD', KEYS[2], id, 'e', body)
    end
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

    async def tail(self, room_key: str) -> str:
        """The id of the journal's last event ("0-0" for none): what `append` expects."""
        tails = ["0-0"]
        for key in (keys.room_events_key(room_key), keys.room_presence_key(room_key)):
            last: Any = await self._redis.xrevrange(key, count=1)
            tails += [text(last[0][0])] if last else []
        return max(tails, key=event_order)

    async def append(
        self,
        room_key: str,
        fence: str,
        events: Sequence[dict[str, Any]],
        tail: str | None = None,
    ) -> list[str]:
        """Append `events` in order in one round trip; an event whose id was already
        journaled (a retried call) gets its stored id back instead of a second entry.

        With `tail`, the append is refused (`NotOwner`) unless the journal's last event
        is still that one: the writer's copy of the room is out of date."""
        dedupes = [keys.room_event_id_key(room_key, event["eid"]) for event in events]
        args: list[str | int] = [fence, DEDUPE_SECONDS, PRESENCE_MAXLEN, tail or ""]
        args += [("p" if is_presence(event) else "e") + json.dumps(event) for event in events]
        streams = [keys.room_events_key(room_key), keys.room_presence_key(room_key)]
        try:
            raw = await self._append(
                keys=[keys.room_owner_key(room_key), *streams, *dedupes], args=args
            )
        except ResponseError as exc:
            if str(exc).startswith("NOT_OWNER"):
                raise NotOwner(f"{room_key} is owned elsewhere now", room=room_key) from None
            if str(exc).startswith("STALE_TAIL"):
                raise NotOwner(
                    f"{room_key}'s journal changed under its writer", room=room_key
                ) from None
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
        """Both streams of the room after `after`, merged into the order of their ids."""
        sources = [
            _entries(self._redis, keys.room_events_key(room_key), after, batch),
            _entries(self._redis, keys.room_presence_key(room_key), after, batch),
        ]
        heads = [await anext(source, None) for source in sources]
        while True:
            waiting = [(event_order(h[0]), side) for side, h in enumerate(heads) if h is not None]
            if not waiting:
                return
            _, side = min(waiting)
            head = heads[side]
            assert head is not None
            yield head
            heads[side] = await anext(sources[side], None)


def is_presence(event: dict[str, Any]) -> bool:
    """Whether `event` goes to the capped presence stream rather than the evidence one."""
    return event.get("type") in PRESENCE_EVENTS


async def _entries(
    redis: Redis, key: str, after: str, batch: int
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    cursor = after
    while True:
        entries: Any = await redis.xrange(key, min=f"({cursor}", max="+", count=batch)
        for raw_id, fields in entries:
            cursor = text(raw_id)
            yield cursor, json.loads(fields[b"e"])
        if len(entries) < batch:
            return
