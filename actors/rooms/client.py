"""Routing room calls from the gateway to the room shard that owns the room."""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from typing import Any

from ray.exceptions import ActorUnavailableError, RayActorError
from redis.asyncio import Redis

from actors.rooms.journal import NotOwner
from actors.rooms.shard import SHARD_KIND, Beat, RoomShard
from core.directory import ShardDirectory
from infra.errors import Forbidden, Unavailable
from infra.named_actors import NamedActors
from infra.settings import Settings
from infra.telemetry import actor_call

_ATTEMPTS = 8
# Beats sent to one shard in one call at most; more wait for the next call.
MAX_BEATS_PER_CALL = 256


def shard_name(index: int) -> str:
    return f"room-shard-{index}"


class RoomRouter:
    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.settings = settings
        self.directory = ShardDirectory(redis, SHARD_KIND)
        self._actors = NamedActors(RoomShard, settings.ray_namespace)
        self._beats: dict[str, list[tuple[Beat, asyncio.Future[dict[str, Any] | None]]]] = {}
        self._senders: dict[str, asyncio.Task[None]] = {}

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

    async def append(self, key: str, event: dict[str, Any]) -> Any:
        """Journal `event` in room `key`. Its id is fixed here, before the first attempt:
        an append whose answer was lost (its shard killed or moved mid-call) and that is
        retried on the new owner is then de-duplicated by the journal, not stored twice."""
        return await self.call(key, "append", {"eid": uuid.uuid4().hex, **event})

    async def heartbeat(
        self, key: str, cid: str, network: str | None, eid: str, join: bool = False
    ) -> Any:
        """A heartbeat (or, `join=True`, a join), group-committed: while one call to
        the room's shard is in flight, the beats that arrive for that shard wait and
        go together in the next call. So an idle gateway adds no delay, and a busy
        one makes one actor call and one journal round trip per room for many
        candidates."""
        owner = await self.directory.owner(key)
        answer: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self._beats.setdefault(owner, []).append(((key, cid, network, eid, join), answer))
        if owner not in self._senders:
            # A fresh context: the batch's spans belong to no single request's trace.
            self._senders[owner] = asyncio.get_running_loop().create_task(
                self._send_beats(owner), context=contextvars.Context()
            )
        result = await answer
        if result is None or result.get("error") == "not_owner":
            return await self.call(key, "heartbeat", cid, network, eid, join)
        if result.get("error") == "not_joined":
            raise Forbidden("join the room first", reason="not_joined")
        return result

    async def _send_beats(self, owner: str) -> None:
        try:
            while pending := self._beats.get(owner):
                batch = pending[:MAX_BEATS_PER_CALL]
                del pending[:MAX_BEATS_PER_CALL]
                results: list[dict[str, Any] | None] = [None] * len(batch)
                try:
                    handle = await self.handle(owner)
                    results = await actor_call(handle.heartbeats, [beat for beat, _ in batch])
                except Exception:
                    # Unanswered beats fall back to `call`, which waits out a restart
                    # or a move and reports any other failure to its own caller.
                    self._actors.forget(owner)
                    self.directory.forget_cache()
                for (_, answer), result in zip(batch, results, strict=True):
                    if not answer.done():
                        answer.set_result(result)
        finally:
            del self._senders[owner]
            for _, answer in self._beats.pop(owner, []):
                if not answer.done():
                    answer.set_result(None)
