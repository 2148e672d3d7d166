"""Side-device pairing: a short-lived token, shown as a QR code, that pairs one second device.

The logged-in candidate asks for a token; Redis keeps only its SHA-256, for
`pairing_ttl_s`. The first WHIP POST with it pairs the device: from then on
the token is that device's credential for its side session (re-POST after a
failure, PATCH, DELETE) for as long as the candidate's own session lives,
and it pairs nothing else. Asking for a new token revokes the previous one.

The token is bound to the first device that publishes with it. The side device sends
`Examday-Device: <random id>` (22 to 128 URL-safe characters, at least 128 bits, made
once by the phone page and kept in its storage) with every call; the first WHIP POST
binds the token to its SHA-256, atomically, so of two devices racing with the same token
one wins. Later calls must present the same id: another device (or none) gets 403
`pairing_bound`, while the bound phone reconnects as often as it needs. The id is chosen
by the device, not the server, so a first answer lost on the way cannot lock it out.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass

from redis.asyncio import Redis

from core import keys
from infra.errors import Forbidden, MalformedInput, Unauthenticated
from infra.redis import text

TOKEN_BYTES = 32
DEVICE_HEADER = "Examday-Device"
_DEVICE_ID = re.compile(r"^[A-Za-z0-9_-]{22,128}$")
# Bind the pairing record (JSON) to a device digest: 1 bound now or before to this
# device, -1 bound to another, 0 no such record.
_BIND = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local record = cjson.decode(raw)
if record['device'] then
  if record['device'] == ARGV[1] then return 1 end
  return -1
end
record['device'] = ARGV[1]
redis.call('SET', KEYS[1], cjson.encode(record), 'KEEPTTL')
return 1
"""


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
        self._bind = redis.register_script(_BIND)

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

    async def resolve(self, token: str, device_id: str | None) -> SideDevice:
        """The side device `token` stands for; 401 if unknown, expired, revoked or orphaned,
        403 `pairing_bound` if it is bound to a device other than `device_id`."""
        raw = await self.redis.get(keys.media_pairing_key(_digest(token)))
        if raw is None:
            raise Unauthenticated("unknown or expired pairing token", reason="invalid_pairing")
        record = json.loads(raw)
        if not await self.redis.exists(keys.session_key(record["sid"])):
            raise Unauthenticated("the candidate's session has ended", reason="session_ended")
        bound = record.get("device")
        if bound is not None and (device_id is None or _digest(device_id) != bound):
            raise _bound_elsewhere()
        return SideDevice(record["exam"], record["room"], record["cid"], bool(record["paired"]))

    async def bind(self, token: str, device_id: str | None) -> None:
        """The first publish binds the token to its device; the same device may come again."""
        if device_id is None or not _DEVICE_ID.fullmatch(device_id):
            raise MalformedInput(
                f"A side device sends {DEVICE_HEADER}: a random id of 22 to 128 URL-safe "
                "characters that it keeps.",
                reason="device_id_required",
            )
        bound = await self._bind(
            keys=[keys.media_pairing_key(_digest(token))], args=[_digest(device_id)]
        )
        if bound == 0:
            raise Unauthenticated("unknown or expired pairing token", reason="invalid_pairing")
        if bound < 0:
            raise _bound_elsewhere()

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


def _bound_elsewhere() -> Forbidden:
    return Forbidden("This pairing token belongs to another device.", reason="pairing_bound")
