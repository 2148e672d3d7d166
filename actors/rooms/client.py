"""Routing room calls from the gateway to the room shard that owns the room.

`core.rooms.RoomCalls` finds the owner and follows moves (any subsystem may
journal into a room through it); `RoomRouter` adds what the gateway and the
cluster tools need on top: starting shards, the views, and group-committed
heartbeats.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

from redis.asyncio import Redis

from actors.rooms.shard import Beat, RoomShard
from core.rooms import RoomCalls, room_shard_name
from infra.actor_calls import call_once
from infra.errors import Forbidden
from infra.settings import Settings

# Beats sent to one shard in one call at most; more wait for the next call.
MAX_BEATS_PER_CALL = 256

shard_name = room_shard_name


class RoomRouter(RoomCalls):
    def __init__(self, settings: Settings, redis: Redis) -> None:
        super().__init__(settings, redis, RoomShard)
        self._beats: dict[str, list[tuple[Beat, asyncio.Future[dict[str, Any] | None]]]] = {}
        self._senders: dict[str, asyncio.Task[None]] = {}

    async def ensure_shards(self) -> None:
        """Create the configured room shards if missing and list them in the directory.
        The directory lives in Redis, which outlives a Ray cluster (`examday down`, then
        `up`): the shards it lists are started again where the new cluster lacks them,
        or every room would wait for an owner that never comes."""
        members = await self.directory.members()
        if members:
            for name in members:
                await asyncio.to_thread(self.shards.create, name, self.settings, name)
            return
        for index in range(self.settings.room_shards):
            await self.add_shard(shard_name(index))

    async def add_shard(self, name: str) -> None:
        await asyncio.to_thread(self.shards.create, name, self.settings, name)
        await self.directory.add(name, {})

    # -- rooms -----------------------------------------------------------------

    async def room_view(self, key: str) -> dict[str, Any]:
        """The proctor's view of room `key`: presence, incidents, last event id."""
        view: dict[str, Any] = await self._call(key, "room_view")
        return view

    async def candidate_view(self, key: str, cid: str) -> dict[str, Any]:
        """What candidate `cid` may see of room `key`."""
        view: dict[str, Any] = await self._call(key, "candidate_view", cid)
        return view

    async def ensure_loaded(self, key: str) -> str:
        """Have room `key` loaded on its owner (taking it over if it moved); its last event id."""
        last_event_id: str = await self._call(key, "ensure_loaded")
        return last_event_id

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
            return await self._call(key, "heartbeat", cid, network, eid, join)
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
                    results = await call_once(handle, "heartbeats", [beat for beat, _ in batch])
                except Exception:
                    # Unanswered beats fall back to `_call`, which waits out a restart
                    # or a move and reports any other failure to its own caller.
                    self.shards.forget(owner)
                    self.directory.forget_cache()
                for (_, answer), result in zip(batch, results, strict=True):
                    if not answer.done():
                        answer.set_result(result)
        finally:
            del self._senders[owner]
            for _, answer in self._beats.pop(owner, []):
                if not answer.done():
                    answer.set_result(None)
