"""RoomShard: holds many live exam rooms in memory, journaled to Redis before any answer.

A shard owns the rooms that rendezvous hashing gives it in the shard
directory. It loads a room on first use (snapshot + journal replay) after
taking ownership with a fenced epoch, so a restarted shard, or the new owner
after a rebalance, rebuilds exactly the acknowledged state. A sweeper marks
candidates whose heartbeats stopped as disconnected and drops rooms the shard
no longer owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any

import ray

from actors.rooms.journal import SNAPSHOT_EVERY, Journal, event_order
from actors.rooms.state import RoomState
from core import keys
from core.directory import ShardDirectory
from core.process_services import open_process
from core.rooms import ROOM_SHARD_KIND, NotOwner
from infra.errors import Forbidden
from infra.priority import Priority
from infra.redis import REDIS_DOWN, text
from infra.settings import Settings
from infra.telemetry import traced

SHARD_KIND = ROOM_SHARD_KIND
SWEEP_SECONDS = 2.0
# (room key, candidate id, network, event id, join): a join also admits a newcomer.
Beat = tuple[str, str, str | None, str, bool]


def beat_kind(room: RoomState, cid: str, join: bool) -> str | None:
    """The room's join rule, for single and batched beats alike: a join, or a heartbeat of a
    candidate the sweeper marked disconnected, is `joined`; a heartbeat of a joined one is
    `heartbeat`; a heartbeat of anyone else (absent, left, ended) is refused (None)."""
    presence = room.presence.get(cid)
    state = presence.state if presence else "absent"
    if not join and state not in ("joined", "disconnected"):
        return None
    return "heartbeat" if state == "joined" else "joined"


@ray.remote(num_cpus=0, resources={"room_shard": 1}, max_restarts=-1, max_task_retries=3)
class RoomShard:
    def __init__(self, settings: Settings, name: str) -> None:
        self.process = open_process(settings, "room_shard", priority=Priority.LIVE)
        self.name = name
        self.settings = settings
        self.redis = self.process.redis
        self.journal = Journal(self.redis)
        self.directory = ShardDirectory(self.redis, SHARD_KIND)
        self.rooms: dict[str, RoomState] = {}
        self.fences: dict[str, str] = {}
        # Per room, the journal's last event id as this shard knows it: each append
        # expects it, so a journal that changed underneath (see `Journal.append`)
        # makes the shard rebuild the room instead of writing on after a gap.
        self.tails: dict[str, str] = {}
        self.locks: dict[str, asyncio.Lock] = {}
        self.write_locks: dict[str, asyncio.Lock] = {}
        self.started = time.time()
        self.appended = 0
        self.beats_received = 0
        self.beat_calls = 0
        self._sweeper: asyncio.Task[None] | None = None

    # -- room life cycle ---------------------------------------------------

    async def _room(self, key: str) -> RoomState:
        self._ensure_sweeper()
        room = self.rooms.get(key)
        if room is not None:
            return room
        lock = self.locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key in self.rooms:
                return self.rooms[key]
            owner = await self.directory.owner(key)
            if owner != self.name:
                raise NotOwner(f"{key} belongs to {owner}", room=key, owner=owner)
            fence = await self.journal.take_over(key, self.name)
            room = await self._rebuild(key)
            # Read under the new fence: no other shard can append after it.
            self.tails[key] = await self.journal.tail(key)
            self.fences[key] = fence
            self.rooms[key] = room
            await self.redis.sadd(keys.room_shard_rooms_key(self.name), key)
            return room

    async def _rebuild(self, key: str) -> RoomState:
        snapshot = await self.journal.load_snapshot(key)
        room = RoomState.from_snapshot(snapshot) if snapshot else RoomState(key)
        async for event_id, event in self.journal.replay(key, after=room.last_event_id):
            room.apply(event_id, event)
        return room

    def _drop(self, key: str) -> None:
        self.rooms.pop(key, None)
        self.fences.pop(key, None)
        self.tails.pop(key, None)

    async def _append(
        self,
        key: str,
        event: dict[str, Any],
        prepare: Callable[[RoomState, dict[str, Any]], None] | None = None,
    ) -> str:
        """Journal, then apply. One writer per room at a time, so that the order
        events are applied in is the order Redis stored them in."""
        room = await self._room(key)
        async with self.write_locks.setdefault(key, asyncio.Lock()):
            if prepare is not None:
                prepare(room, event)
            return (await self._commit(key, room, [event]))[0]

    async def _commit(self, key: str, room: RoomState, events: list[dict[str, Any]]) -> list[str]:
        """Journal `events` in one round trip, then apply them; the caller holds the
        room's write lock."""
        now = time.time()
        for event in events:
            event.setdefault("at", now)
            event.setdefault("eid", uuid.uuid4().hex)
        try:
            event_ids = await self.journal.append(key, self.fences[key], events, self.tails[key])
        except NotOwner:
            self._drop(key)
            await self.redis.srem(keys.room_shard_rooms_key(self.name), key)
            raise
        # New entries come after the old tail; a de-duplicated one is at or before it.
        self.tails[key] = max([self.tails[key], *event_ids], key=event_order)
        before = room.event_count
        for event_id, event in zip(event_ids, events, strict=True):
            # A retried append returns the id stored before a crash: already applied.
            if event_order(event_id) > event_order(room.last_event_id):
                room.apply(event_id, event)
                self.appended += 1
        if room.event_count // SNAPSHOT_EVERY > before // SNAPSHOT_EVERY:
            await self.journal.save_snapshot(key, room.snapshot())
        return event_ids

    # -- candidate and proctor actions ---------------------------------------

    @traced
    async def append(self, key: str, event: dict[str, Any]) -> str:
        """Journal one event (joined, heartbeat, left, message, incident, ...) and apply it."""
        return await self._append(key, event)

    @traced
    async def heartbeat(
        self, key: str, cid: str, network: str | None, eid: str, join: bool = False
    ) -> dict[str, Any]:
        """A join (`join=True`) or a heartbeat; a heartbeat after a timeout rejoins."""

        def prepare(room: RoomState, event: dict[str, Any]) -> None:
            kind = beat_kind(room, cid, join)
            if kind is None:
                raise Forbidden("join the room first", reason="not_joined")
            event["type"] = kind

        event = {"type": "heartbeat", "cid": cid, "network": network, "eid": eid}
        event_id = await self._append(key, event, prepare)
        return self.rooms[key].beat_answer(event_id, cid)

    @traced
    async def heartbeats(self, beats: list[Beat]) -> list[dict[str, Any]]:
        """Many candidates' heartbeats and joins in one call (the gateway batches
        them per shard): one journal round trip per room, not one actor call and one
        script per beat, so a room's candidates all joining at the start of the exam
        do not queue behind each other's commits. Each beat gets its own answer: the
        event, the candidate's presence state and the last `reconnect` meant for them
        (the presence socket tells a new one), or `not_joined` / `not_owner` (the
        gateway retries those one by one)."""
        self.beat_calls += 1
        self.beats_received += len(beats)
        by_room: dict[str, list[int]] = {}
        for index, beat in enumerate(beats):
            by_room.setdefault(beat[0], []).append(index)
        answers: list[dict[str, Any]] = [{"error": "not_owner"}] * len(beats)

        async def commit_room(key: str, indices: list[int]) -> None:
            with contextlib.suppress(NotOwner):
                room = await self._room(key)
                async with self.write_locks.setdefault(key, asyncio.Lock()):
                    events, committed = [], []
                    for index in indices:
                        _, cid, network, eid, join = beats[index]
                        kind = beat_kind(room, cid, join)
                        if kind is None:
                            answers[index] = {"error": "not_joined"}
                            continue
                        events.append({"type": kind, "cid": cid, "network": network, "eid": eid})
                        committed.append(index)
                    event_ids = await self._commit(key, room, events) if events else []
                    for index, event_id in zip(committed, event_ids, strict=True):
                        answers[index] = room.beat_answer(event_id, beats[index][1])

        await asyncio.gather(*(commit_room(key, indices) for key, indices in by_room.items()))
        return answers

    @traced
    async def candidate_view(self, key: str, cid: str) -> dict[str, Any]:
        return (await self._room(key)).view_for(cid)

    @traced
    async def room_view(self, key: str) -> dict[str, Any]:
        return (await self._room(key)).snapshot()

    @traced
    async def ensure_loaded(self, key: str) -> str:
        return (await self._room(key)).last_event_id

    # -- shard operations ----------------------------------------------------

    async def owned_rooms(self) -> list[str]:
        return sorted(self.rooms)

    async def stats(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rooms": len(self.rooms),
            "candidates_joined": sum(
                1 for r in self.rooms.values() for p in r.presence.values() if p.state == "joined"
            ),
            "events_appended": self.appended,
            "beats_received": self.beats_received,
            "beat_calls": self.beat_calls,
            "node": ray.get_runtime_context().get_node_id(),
            "pid": __import__("os").getpid(),
            "uptime": time.time() - self.started,
        }

    async def release_lost_rooms(self) -> list[str]:
        """Drop the rooms the directory now gives to another shard."""
        lost = [key for key in list(self.rooms) if await self.directory.owner(key) != self.name]
        for key in lost:
            self._drop(key)
            await self.redis.srem(keys.room_shard_rooms_key(self.name), key)
        return lost

    async def reload_owned(self) -> int:
        """After a restart: bring back every room this shard held, before anyone calls."""
        held = [text(k) for k in await self.redis.smembers(keys.room_shard_rooms_key(self.name))]
        loaded = 0
        for key in held:
            with contextlib.suppress(NotOwner):
                await self._room(key)
                loaded += 1
        return loaded

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        timeout = self.settings.heartbeat_timeout_seconds
        rounds = 0
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            rounds += 1
            now = time.time()
            for key, room in list(self.rooms.items()):
                for cid in room.overdue(now, timeout):
                    # Redis down: the next round tries again (an error would end the sweeper
                    # until the room's next call restarts it).
                    with contextlib.suppress(NotOwner, *REDIS_DOWN):
                        await self._append(key, {"type": "disconnected", "cid": cid})
            if rounds % 5 == 0:
                with contextlib.suppress(Exception):
                    await self.release_lost_rooms()
