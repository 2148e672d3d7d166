"""One-time links by which a minor's guardian gives consent themselves.

Only the SHA-256 of a link's token is kept, with a TTL: the token travels in the
link's fragment (`#token=...`, never sent to a server in a request line or a
`Referer`), and reading the key back out of Redis gives no usable link.
Taking a link deletes it in the same command, so two tabs cannot both consent.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time

from redis.asyncio import Redis

from core import keys
from infra.errors import NotFound

PAGE = "/candidate/guardian.html"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class GuardianLinks:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def mint(self, exam_id: str, cid: str, ttl: int, by: str) -> dict[str, object]:
        token = secrets.token_urlsafe(32)
        expires = time.time() + ttl
        record = json.dumps({"exam": exam_id, "cid": cid, "by": by, "expires_at": expires})
        await self.redis.set(keys.guardian_link_key(_digest(token)), record, ex=ttl)
        return {"url": f"{PAGE}#token={token}", "expires_at": expires}

    async def peek(self, token: str) -> tuple[str, str]:
        return _parsed(await self.redis.get(keys.guardian_link_key(_digest(token))))

    async def take(self, token: str) -> tuple[str, str, str]:
        """The link's exam and candidate, and a short reference of the link; it is gone after."""
        digest = _digest(token)
        exam, cid = _parsed(await self.redis.getdel(keys.guardian_link_key(digest)))
        return exam, cid, f"link:{digest[:16]}"


def _parsed(raw: bytes | str | None) -> tuple[str, str]:
    if raw is None:
        raise NotFound(
            "this link is not valid: it expired or was used", reason="guardian_link_invalid"
        )
    record = json.loads(raw)
    return str(record["exam"]), str(record["cid"])
