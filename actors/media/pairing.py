"""Side-device pairing: a short-lived token, shown as a QR code, that pairs one second device.

The logged-in candidate asks for a token; Redis keeps only its SHA-256, for
`pairing_ttl_s`. The first WHIP POST with it pairs the device: from then on
the token is that device's credential for its side session (re-POST after a
failure, PATCH, DELETE) for as long as the candidate's own session lives,
and it pairs nothing else. Asking for a new token revokes the previous one.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass

from redis.asyncio import Redis

from core import keys
from infra.errors import Unauthenticated
from infra.redis import text

TOKEN_BYTES = 32


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class SideDevice:
    exam: str
    room: str
    cid: str
    paired: bool


class Pairing:
    def __init__(self, redis: Redis, *, pairing_ttl: int, session_ttl: int) -> None:
        self.redis = redis
        self.pairing_ttl = pairing_ttl
        self.session_ttl = session_ttl

    async def issue(self, exam_id: str, room: str, cid: str, candidate_sid: str) -> str:
        """A new token for the candidate's side device; the previous one stops working."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        digest = _digest(token)
        record = {"exam": exam_id, "room": room, "cid": cid, "sid": candidate_sid, "paired": False}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.media_pairing_key(digest), json.dumps(record), ex=self.pairing_ttl)
            pipe.set(keys.media_pairing_of_key(exam_id, cid), digest, ex=self.session_ttl, get=True)
            _, previous = await pipe.execute()
        if previous is not None:
            await self.redis.delete(keys.media_pairing_key(text(previous)))
        return token

    async def resolve(self, token: str) -> SideDevice:
        """The side device `token` stands for; 401 if unknown, expired, revoked or orphaned."""
        raw = await self.redis.get(keys.media_pairing_key(_digest(token)))
        if raw is None:
            raise Unauthenticated("unknown or expired pairing token", reason="invalid_pairing")
        record = json.loads(raw)
        if not await self.redis.exists(keys.session_key(record["sid"])):
            raise Unauthenticated("the candidate's session has ended", reason="session_ended")
        return SideDevice(record["exam"], record["room"], record["cid"], bool(record["paired"]))

    async def pair(self, token: str) -> None:
        """The first publish with `token`: it lives on as the device's credential."""
        key = keys.media_pairing_key(_digest(token))
        raw = await self.redis.get(key)
        if raw is None:
            raise Unauthenticated("unknown or expired pairing token", reason="invalid_pairing")
        record = json.loads(raw)
        if not record["paired"]:
            record["paired"] = True
            await self.redis.set(key, json.dumps(record), ex=self.session_ttl, xx=True)
