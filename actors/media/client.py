"""Routing media calls from the gateway to the media shard that holds the room's media.

All media of one room lives on one MediaShard, so that a proctor's viewer,
the candidates' publishers and the talk-back meet in one forwarder. The
room-to-shard map is a Redis hash (like LiveKit's room-to-node map): a room
without an entry goes to the least loaded live shard, by the load reports the
shards write every few seconds. A shard with no fresh report that does not
answer a ping either is taken for gone, and its rooms move to a live one as
they are next used, if Ray says it is dead or it has not reported for
`gone_after_s`; a shard that is alive but too busy to answer keeps its rooms
(its publishers are still connected to it) and the client gets 503. Calls to a
shard that is restarting are retried for a few seconds; after that, or when
the shard is too busy to answer, the client gets 503 with Retry-After and
re-POSTs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ray.exceptions import GetTimeoutError, RayActorError
from redis.asyncio import Redis

from actors.media.pairing import Pairing
from actors.media.segment_store import RecordingIndex
from actors.media.sessions import MediaSessions
from actors.media.shard import SHARD_KIND, MediaShard, shard_name
from actors.media.tag import SessionTag
from core import keys
from core.directory import ShardDirectory
from infra.actor_calls import ActorCalls, Retries, call_once
from infra.errors import ActorRestarting, Unavailable
from infra.redis import text
from infra.settings import Settings

PING_TIMEOUT_S = 3.0
CALL_ATTEMPTS = 6  # 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s of waiting for a restart (and jitter)
# A call to a shard Ray is restarting waits for the restart; not longer than this.
CALL_TIMEOUT_S = 8.0
CALL_RETRIES = Retries(
    attempts=CALL_ATTEMPTS,
    reason="media_unavailable",
    detail="the media shard is restarting; send the offer again",
    first_pause_s=0.1,
    max_pause_s=1.6,
    timeout_s=CALL_TIMEOUT_S,
    timeout_detail="the media shard did not answer in time; send the offer again",
)
# Reassign a room only if it still points at the shard we found gone.
_MOVE_ROOM = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return ARGV[3]
end
return redis.call('HGET', KEYS[1], ARGV[1])
"""


def _score(load: dict[str, Any]) -> tuple[float, float, str]:
    full = load["sessions"] / max(load["max_sessions"], 1)
    return (full, float(load.get("cpu_percent", 0.0)), str(load["name"]))


class MediaRouter:
    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.settings = settings
        self.redis = redis
        self.directory = ShardDirectory(redis, SHARD_KIND)
        self.shards = ActorCalls(settings.ray_namespace, CALL_RETRIES, MediaShard)

    # -- shards ----------------------------------------------------------------

    async def ensure_shards(self) -> None:
        """Create the configured media shards if missing; list them in the directory."""
        for index in range(self.settings.media_shards):
            await self.add_shard(shard_name(index))

    async def add_shard(
        self, name: str, settings: Settings | None = None, *, pool: bool = True
    ) -> None:
        """Start (or find) shard `name`; outside the pool it gets rooms only by `assign`."""
        await asyncio.to_thread(self.shards.create, name, settings or self.settings, name)
        if pool:
            await self.directory.add(name, {})

    async def handle(self, name: str) -> Any:
        return await self.shards.handle(name)

    async def loads(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """The fresh load reports of `names`; a shard without one is not live."""
        if not names:
            return {}
        raw = await self.redis.mget([keys.media_load_key(name) for name in names])
        return {name: json.loads(r) for name, r in zip(names, raw, strict=True) if r is not None}

    # -- rooms -----------------------------------------------------------------

    async def assign(self, room: str, name: str) -> None:
        """Put room `room` (exam/room) on shard `name`, whatever the load says."""
        await self.redis.hset(keys.MEDIA_ROOMS, room, name)

    async def shard_for(self, room: str) -> str:
        """The shard holding `room`'s media: its assigned one if live, else the least loaded."""
        raw = await self.redis.hget(keys.MEDIA_ROOMS, room)
        assigned = text(raw) if raw is not None else None
        if assigned is not None and await self._live(assigned):
            return assigned
        chosen = await self._least_loaded(exclude=assigned)
        if assigned is None:
            await self.redis.hsetnx(keys.MEDIA_ROOMS, room, chosen)
            return text(await self.redis.hget(keys.MEDIA_ROOMS, room))
        moved = await self.redis.eval(_MOVE_ROOM, 1, keys.MEDIA_ROOMS, room, assigned, chosen)
        return text(moved)

    async def _least_loaded(self, exclude: str | None) -> str:
        members = [m for m in await self.directory.members() if m != exclude]
        loads = await self.loads(members)
        live = [load for load in loads.values() if not load.get("closing")]
        if live:
            return str(min(live, key=_score)["name"])
        # No fresh report (all just started, or Redis was slow): one that answers will do.
        for name in members:
            with contextlib.suppress(Unavailable):
                if await self._answers(name):
                    return name
        raise Unavailable("no media shard is live", reason="media_unavailable", retry_after=2)

    async def _live(self, name: str) -> bool:
        load = (await self.loads([name])).get(name)
        if load is not None:
            return not load.get("closing")
        return await self._answers(name)

    async def _answers(self, name: str) -> bool:
        """Is shard `name` up and taking sessions, though it has not reported lately?

        Raises `Unavailable` for a shard that is alive but too busy to answer.
        """
        try:
            handle = await self.handle(name)
            pong = await call_once(handle, "ping", timeout_s=PING_TIMEOUT_S)
        except (RayActorError, ValueError):
            self.shards.forget(name)
            return False  # dead, or not registered again after a restart
        except (GetTimeoutError, TimeoutError):
            if not await self.redis.exists(keys.media_seen_key(name)):
                return False  # silent for `gone_after_s`: hung, or on a lost node
            raise Unavailable(
                "the media shard is too busy to answer; send the offer again",
                reason="media_busy",
                retry_after=2,
            ) from None
        return not pong["closing"]

    # -- calls -----------------------------------------------------------------

    async def _call(self, name: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call `method` on shard `name`, waiting out a restart; its own errors pass through.

        A shard too loaded to answer in `CALL_TIMEOUT_S` (or a restart that takes that
        long) is not asked again: the client should come back later, and its report
        still counts (a busy shard keeps its rooms). One still restarting after the
        last attempt loses its report: the next request asks whether it is back.
        """
        try:
            return await self.shards.call(name, method, *args, **kwargs)
        except ActorRestarting:
            await self.redis.delete(keys.media_load_key(name))
            raise

    async def publish(
        self, name: str, offer: str, tag: SessionTag, *, content_type: str | None, session_id: str
    ) -> str:
        """Shard `name`'s answer to a WHIP offer for `tag`, as session `session_id`."""
        answer: str = await self._call(
            name, "publish", offer, tag, content_type=content_type, session_id=session_id
        )
        return answer

    async def subscribe(
        self,
        name: str,
        offer: str,
        sources: Sequence[str],
        *,
        content_type: str | None,
        session_id: str,
    ) -> str:
        """Shard `name`'s answer to a WHEP offer watching the publisher sessions `sources`."""
        answer: str = await self._call(
            name,
            "subscribe",
            offer,
            list(sources),
            content_type=content_type,
            session_id=session_id,
        )
        return answer

    async def patch(
        self, name: str, session_id: str, fragment: str, *, content_type: str | None
    ) -> str | None:
        """Trickle ICE `fragment` into session `session_id` on shard `name`; an ICE
        restart returns the fragment to answer with."""
        answer: str | None = await self._call(
            name, "patch", session_id, fragment, content_type=content_type
        )
        return answer

    async def close_session(self, name: str, session_id: str) -> None:
        await self._call(name, "close_session", session_id)

    async def ping(self, name: str) -> dict[str, Any]:
        """Shard `name`'s name, pid and whether it is closing."""
        pong: dict[str, Any] = await self._call(name, "ping")
        return pong

    async def stats(self, name: str) -> dict[str, Any]:
        """Shard `name`'s forwarder, face feed and recording counters and its load."""
        stats: dict[str, Any] = await self._call(name, "stats")
        return stats

    async def drain(self, name: str) -> dict[str, Any]:
        """Have shard `name` refuse new sessions and close its own (recordings flush)."""
        counters: dict[str, Any] = await self._call(name, "drain")
        return counters


@dataclass
class MediaPlane:
    """What a gateway holds of the media plane: shard routing, session records, pairing, index."""

    router: MediaRouter
    sessions: MediaSessions
    pairing: Pairing
    recordings: RecordingIndex

    @classmethod
    def open(cls, settings: Settings, redis: Redis) -> MediaPlane:
        ttl = settings.session_ttl_seconds
        return cls(
            router=MediaRouter(settings, redis),
            sessions=MediaSessions(redis, ttl),
            pairing=Pairing(redis, pairing_ttl=settings.media.pairing_ttl_s, session_ttl=ttl),
            recordings=RecordingIndex(redis),
        )
