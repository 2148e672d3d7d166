"""The shard directory in Redis, so that every gateway agrees on the shard set.

A hash per shard kind holds the members; a version counter changes on every
change, and readers keep a short cache keyed by that version, so that finding
a room's shard (on every heartbeat) costs no round trip while the cache is
fresh. Pinned keys (a room in the middle of a move) override the hash ring
until unpinned; pins are versioned and cached with the members. A reader may
act on a directory up to `_CACHE_SECONDS` old: the journal's fences, not the
directory, keep two shards from writing one room.

When the cache goes stale, one reader refreshes it and the others wait for that
answer: a gateway with thousands of presence sockets has hundreds of beats in
flight, and each asking Redis for the version at the same instant emptied its
connection pool every half second (a stampede seen in the combined rehearsal's
profile). A change made through this directory (`add`, `pin`, ...) drops both the
cache and any refresh begun before it, so its maker reads its own change.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from core import hashing, keys

_CACHE_SECONDS = 0.5


class ShardDirectory:
    def __init__(self, redis: Redis, kind: str) -> None:
        self._redis = redis
        self.kind = kind
        self._members_key = keys.shards_key(kind)
        self._version_key = keys.shards_version_key(kind)
        self._pins_key = keys.shards_pins_key(kind)
        self._cache: _Snapshot | None = None
        self._refresh: asyncio.Future[_Snapshot] | None = None

    async def add(self, name: str, meta: dict[str, Any] | None = None) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._members_key, name, json.dumps(meta or {}))
            pipe.incr(self._version_key)
            await pipe.execute()
        self.forget_cache()

    async def remove(self, name: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self._members_key, name)
            pipe.incr(self._version_key)
            await pipe.execute()
        self.forget_cache()

    async def members(self) -> list[str]:
        return (await self._snapshot()).members

    async def _snapshot(self) -> _Snapshot:
        cached = self._cache
        if cached and time.monotonic() - cached.read_at < _CACHE_SECONDS:
            return cached
        if self._refresh is None:
            refresh = asyncio.ensure_future(self._read(cached))
            self._refresh = refresh
            refresh.add_done_callback(self._refreshed)
        # Shielded: a waiter that gives up (its beat timed out) leaves the read to the rest.
        return await asyncio.shield(self._refresh)

    def _refreshed(self, refresh: asyncio.Future[_Snapshot]) -> None:
        if self._refresh is not refresh:  # dropped by a change meanwhile: not cached
            return
        self._refresh = None
        if not refresh.cancelled() and refresh.exception() is None:
            self._cache = refresh.result()

    async def _read(self, cached: _Snapshot | None) -> _Snapshot:
        now = time.monotonic()
        version = int(await self._redis.get(self._version_key) or 0)
        if cached and cached.version == version:
            return _Snapshot(now, version, cached.members, cached.pins, cached.owners)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hkeys(self._members_key)
            pipe.hgetall(self._pins_key)
            names, pins = await pipe.execute()
        return _Snapshot(
            read_at=now,
            version=version,
            members=sorted(_text(n) for n in names),
            pins={_text(k): _text(v) for k, v in pins.items()},
        )

    def forget_cache(self) -> None:
        self._cache = None
        self._refresh = None

    async def meta(self) -> dict[str, dict[str, Any]]:
        raw = await self._redis.hgetall(self._members_key)
        return {_text(k): json.loads(v) for k, v in raw.items()}

    async def owner(self, key: str) -> str:
        snapshot = await self._snapshot()
        owner = snapshot.pins.get(key) or snapshot.owners.get(key)
        if owner is None:
            owner = snapshot.owners[key] = hashing.owner(key, snapshot.members)
        return owner

    async def pin(self, key: str, shard: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._pins_key, key, shard)
            pipe.incr(self._version_key)
            await pipe.execute()
        self.forget_cache()

    async def unpin(self, key: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self._pins_key, key)
            pipe.incr(self._version_key)
            await pipe.execute()
        self.forget_cache()


@dataclass
class _Snapshot:
    read_at: float
    version: int
    members: list[str]
    pins: dict[str, str]
    # Rendezvous answers for these members, memoised: rooms are asked for again and again.
    owners: dict[str, str] = field(default_factory=dict)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
