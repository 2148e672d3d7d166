"""The shard directory in Redis, so that every gateway agrees on the shard set.

A hash per shard kind holds the members; a version counter changes on every
change, and readers keep a short cache keyed by that version. Pinned keys
(a room in the middle of a move) override the hash ring until unpinned.
"""

from __future__ import annotations

import json
import time
from typing import Any

from redis.asyncio import Redis

from cluster import hashing

_CACHE_SECONDS = 0.5


class ShardDirectory:
    def __init__(self, redis: Redis, kind: str) -> None:
        self._redis = redis
        self.kind = kind
        self._members_key = f"examday:shards:{kind}"
        self._version_key = f"examday:shards:{kind}:version"
        self._pins_key = f"examday:shards:{kind}:pins"
        self._cache: tuple[float, int, list[str]] | None = None

    async def add(self, name: str, meta: dict[str, Any] | None = None) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._members_key, name, json.dumps(meta or {}))
            pipe.incr(self._version_key)
            await pipe.execute()
        self._cache = None

    async def remove(self, name: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self._members_key, name)
            pipe.incr(self._version_key)
            await pipe.execute()
        self._cache = None

    async def members(self) -> list[str]:
        now = time.monotonic()
        if self._cache and now - self._cache[0] < _CACHE_SECONDS:
            return self._cache[2]
        version = int(await self._redis.get(self._version_key) or 0)
        if self._cache and self._cache[1] == version:
            self._cache = (now, version, self._cache[2])
            return self._cache[2]
        names = sorted(_text(n) for n in await self._redis.hkeys(self._members_key))
        self._cache = (now, version, names)
        return names

    def forget_cache(self) -> None:
        self._cache = None

    async def meta(self) -> dict[str, dict[str, Any]]:
        raw = await self._redis.hgetall(self._members_key)
        return {_text(k): json.loads(v) for k, v in raw.items()}

    async def owner(self, key: str) -> str:
        pinned = await self._redis.hget(self._pins_key, key)
        if pinned is not None:
            return _text(pinned)
        return hashing.owner(key, await self.members())

    async def pin(self, key: str, shard: str) -> None:
        await self._redis.hset(self._pins_key, key, shard)

    async def unpin(self, key: str) -> None:
        await self._redis.hdel(self._pins_key, key)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
