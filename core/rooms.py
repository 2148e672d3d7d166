"""Reaching a live exam room from any subsystem: find its owning room shard, journal into it.

Rooms are held by `RoomShard` actors (`actors.rooms`), each owning the rooms
rendezvous hashing gives it in the shard directory of kind `ROOM_SHARD_KIND`.
Other subsystems write into a room's journal too (the face checks journal
incidents, a media drain tells clients to reconnect) but must not depend on the
rooms subsystem, so the part of room routing they need lives here, below every
subsystem: `RoomCalls` finds the owner, calls it through `infra.actor_calls`,
follows a room that moved (`NotOwner`) and waits out a restarting shard.
`actors.rooms.client.RoomRouter` builds the gateway's room API on it.
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

from redis.asyncio import Redis

from core.directory import ShardDirectory
from infra.actor_calls import ActorCalls, Retries
from infra.errors import Conflict
from infra.settings import Settings

ROOM_SHARD_KIND = "room"
ROOM_RETRIES = Retries(
    attempts=8, reason="room_unavailable", detail="the room is moving; try again"
)


PRESENCE_STATES = ("joined", "disconnected", "left", "ended", "absent")


def room_shard_name(index: int) -> str:
    return f"room-shard-{index}"


def presence_counts(view: dict[str, Any], roster: list[str]) -> dict[str, int]:
    """How many of the room's roster are in each presence state (`PRESENCE_STATES`) in
    a room view: a rostered candidate the journal never saw is `absent`, and one the
    journal saw but who is no longer rostered (moved room) is not counted."""
    counts = dict.fromkeys(PRESENCE_STATES, 0)
    for cid in roster:
        state = view["presence"].get(cid, {}).get("state", "absent")
        counts[state if state in counts else "absent"] += 1
    return counts


def open_incidents(view: dict[str, Any]) -> int:
    return sum(1 for incident in view["incidents"].values() if incident.get("status") == "open")


def open_help(view: dict[str, Any]) -> int:
    return len(view.get("help", {}))


class NotOwner(Conflict):
    """A room shard was asked about a room the directory (or the journal's fence) now
    gives to another shard: ask the directory again."""

    default_reason = "not_owner"
    title = "This shard no longer owns the room"


class RoomCalls:
    """Calls to the room shard that owns a room, following moves and waiting out restarts.

    `shard_class` is needed only by whoever starts shards (`RoomRouter`); callers
    that only call find the running ones by name.
    """

    def __init__(self, settings: Settings, redis: Redis, shard_class: Any = None) -> None:
        self.settings = settings
        self.directory = ShardDirectory(redis, ROOM_SHARD_KIND)
        self.shards = ActorCalls(
            settings.ray_namespace,
            ROOM_RETRIES,
            shard_class,
            moved=(NotOwner,),
            rerouted=self.directory.forget_cache,
        )

    async def handle(self, name: str) -> Any:
        return await self.shards.handle(name)

    async def append(self, key: str, event: dict[str, Any]) -> str:
        """Journal `event` in room `key`; returns its event id. Its id is fixed here, before
        the first attempt: an append whose answer was lost (its shard killed or moved
        mid-call) and that is retried on the new owner is then de-duplicated by the
        journal, not stored twice."""
        event_id: str = await self._call(key, "append", {"eid": uuid.uuid4().hex, **event})
        return event_id

    async def _call(self, key: str, method: str, *args: Any) -> Any:
        """`method(key, *args)` on the owner of room `key`."""
        return await self.shards.call(
            functools.partial(self.directory.owner, key), method, key, *args
        )
