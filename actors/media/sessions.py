"""The gateway's record of WHIP/WHEP sessions: who owns each, which shard holds it, its ETag.

A session URL (`/v1/whip/sessions/{id}`) names a record here; the id is 128
random bits, and every use is checked against the caller's owner key as well,
so another caller's session URL answers 404. Pointers give a candidate's
current publisher session per source, and a room's current talk-back, to
the WHEP side; a new session for the same slot replaces the old one.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, replace
from typing import Literal

from redis.asyncio import Redis

from core import keys
from infra.errors import NotFound
from infra.redis import text

Kind = Literal["whip", "whep"]
# Delete a pointer only if it still names the session being removed.
_UNPOINT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def new_session_id() -> str:
    return secrets.token_hex(16)


def new_etag() -> str:
    return f'"{secrets.token_hex(8)}"'


@dataclass(frozen=True, slots=True)
class MediaSession:
    id: str
    kind: Kind
    owner: str  # "candidate:{exam}:{cid}", "side:{exam}:{cid}" or "staff:{username}"
    exam: str
    room: str
    cid: str | None  # the candidate publishing, watched, or addressed; None: the whole room
    source: str  # camera, screen, side, talkback, probe; for WHEP what it watches, comma-separated
    shard: str
    etag: str

    @property
    def pointer(self) -> str | None:
        """The slot this session fills, which one more session of the same slot replaces."""
        if self.kind != "whip":
            return None
        if self.source == "talkback":
            return keys.media_talkback_key(self.exam, self.room, self.cid)
        return keys.media_publisher_key(self.exam, self.cid or "", self.source)


class MediaSessions:
    def __init__(self, redis: Redis, ttl_seconds: int) -> None:
        self.redis = redis
        self.ttl = ttl_seconds

    async def save(self, session: MediaSession, ttl: int | None = None) -> str | None:
        """Keep `session` (for `ttl` seconds, else a login's time); returns the id of the
        session it replaces in its slot, if any."""
        ttl = ttl or self.ttl
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.media_session_key(session.id), json.dumps(asdict(session)), ex=ttl)
            if session.pointer is not None:
                pipe.set(session.pointer, session.id, ex=ttl, get=True)
            replies = await pipe.execute()
        previous = replies[1] if session.pointer is not None else None
        return text(previous) if previous is not None else None

    async def retag(self, session: MediaSession) -> MediaSession:
        """`session` with a new ETag (an ICE restart changed it), kept only while it is."""
        updated = replace(session, etag=new_etag())
        key = keys.media_session_key(session.id)
        await self.redis.set(key, json.dumps(asdict(updated)), xx=True, keepttl=True)
        return updated

    async def get(self, session_id: str) -> MediaSession | None:
        raw = await self.redis.get(keys.media_session_key(session_id))
        return MediaSession(**json.loads(raw)) if raw is not None else None

    async def owned(self, session_id: str, kind: Kind, owner: str) -> MediaSession:
        """The session, if `owner` owns it; 404 otherwise, as if it did not exist."""
        session = await self.get(session_id)
        if session is None or session.kind != kind or session.owner != owner:
            raise NotFound("no such media session", reason="unknown_session")
        return session

    async def remove(self, session: MediaSession) -> None:
        await self.redis.delete(keys.media_session_key(session.id))
        if session.pointer is not None:
            await self.redis.eval(_UNPOINT, 1, session.pointer, session.id)

    async def current(self, pointer: str) -> MediaSession | None:
        """The session a slot names now, if it is still recorded."""
        session_id = await self.redis.get(pointer)
        return await self.get(text(session_id)) if session_id is not None else None
