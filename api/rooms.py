"""Routing room calls from the gateway to the room shard that owns the room."""

from __future__ import annotations

import asyncio
from typing import Any

from ray.exceptions import ActorUnavailableError, RayActorError
from redis.asyncio import Redis

from actors.journal import NotOwner
from actors.room_shard import SHARD_KIND, RoomShard
from cluster.directory import ShardDirectory
from infra.errors import Unavailable
from infra.named_actors import NamedActors
from infra.settings import Settings
from infra.telemetry import actor_call

_ATTEMPTS = 8


def room_key(exam_id: str, room_id: str) -> str:
    return f"{exam_id}/{room_id}"


def shard_name(index: int) -> str:
    return f"room-shard-{index}"


class RoomRouter:
    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.settings = settings
        self.directory = ShardDirectory(redis, SHARD_KIND)
        self._actors = NamedActors(RoomShard, settings.ray_namespace)

    async def ensure_shards(self) -> None:
        """Create the configured room shards if missing and list them in the directory."""
        if await self.directory.members():
            return
        for index in range(self.settings.room_shards):
            await self.add_shard(shard_name(index))

    async def add_shard(self, name: str) -> None:
        await asyncio.to_thread(self._actors.create, name, self.settings, name)
        await self.directory.add(name, {})

    async def handle(self, name: str) -> Any:
        return await self._actors.get(name)

    async def call(self, key: str, method: str, *args: Any) -> Any:
        """Call `method` on the owner of room `key`, following moves and waiting out restarts."""
        delay = 0.05
        for _ in range(_ATTEMPTS):
            owner = await self.directory.owner(key)
            try:
                handle = await self.handle(owner)
                return await actor_call(getattr(handle, method), key, *args)
            except NotOwner:
                self.directory.forget_cache()
            except (RayActorError, ActorUnavailableError, ValueError):
                # Restarting (or just removed) shard: look it up again after a pause.
                self._actors.forget(owner)
                self.directory.forget_cache()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        raise Unavailable("the room is moving; try again", reason="room_unavailable", retry_after=1)
