"""Releases, rollouts and the stable version per platform and channel, kept in Redis.

The UpdateManifest actor is the only writer; a restarted actor reads it all back.
Operator events (a rollout halted by the crash gate) go to a capped stream.
"""

from __future__ import annotations

import json
import time
from typing import Any

from redis.asyncio import Redis

from actors.updates.rollout import Release, Rollout
from core import keys
from infra.errors import Conflict
from infra.redis import text

_OPS_EVENTS_MAXLEN = 10_000


class UpdateState:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def release(self, platform: str, channel: str, version: str) -> Release | None:
        raw = await self.redis.get(keys.update_release_key(platform, channel, version))
        return Release.model_validate_json(raw) if raw else None

    async def create_release(self, release: Release) -> None:
        key = keys.update_release_key(release.platform, release.channel, release.version)
        if not await self.redis.set(key, release.model_dump_json(), nx=True):
            raise Conflict(f"release {release.version} exists", reason="release_exists")
        await self.redis.sadd(
            keys.update_releases_key(release.platform, release.channel), release.version
        )

    async def save_release(self, release: Release) -> None:
        key = keys.update_release_key(release.platform, release.channel, release.version)
        await self.redis.set(key, release.model_dump_json())

    async def delete_release(self, release: Release) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.update_release_key(release.platform, release.channel, release.version))
            pipe.srem(keys.update_releases_key(release.platform, release.channel), release.version)
            await pipe.execute()

    async def releases(self, platform: str, channel: str) -> list[Release]:
        versions = sorted(
            text(v) for v in await self.redis.smembers(keys.update_releases_key(platform, channel))
        )
        found = [await self.release(platform, channel, version) for version in versions]
        return [release for release in found if release is not None]

    async def rollout(self, platform: str, channel: str) -> Rollout | None:
        raw = await self.redis.get(keys.update_rollout_key(platform, channel))
        return Rollout.model_validate_json(raw) if raw else None

    async def save_rollout(self, rollout: Rollout) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(
                keys.update_rollout_key(rollout.platform, rollout.channel),
                rollout.model_dump_json(),
            )
            pipe.sadd(keys.UPDATE_ROLLOUTS, f"{rollout.platform}|{rollout.channel}")
            if rollout.state == "complete":
                pipe.set(keys.update_stable_key(rollout.platform, rollout.channel), rollout.version)
            await pipe.execute()

    async def rollouts(self) -> list[tuple[str, str]]:
        pairs = [text(p).split("|", 1) for p in await self.redis.smembers(keys.UPDATE_ROLLOUTS)]
        return sorted((pair[0], pair[1]) for pair in pairs)

    async def stable(self, platform: str, channel: str) -> str | None:
        raw = await self.redis.get(keys.update_stable_key(platform, channel))
        return text(raw) if raw else None

    async def event(self, kind: str, fields: dict[str, Any]) -> None:
        """An event for the operators (no personal data: platforms, versions, rates)."""
        record = json.dumps({"kind": kind, "at": time.time(), **fields})
        await self.redis.xadd(
            keys.OPS_EVENTS, {"e": record}, maxlen=_OPS_EVENTS_MAXLEN, approximate=True
        )
