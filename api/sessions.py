"""Sessions: signed tokens whose validity lives in Redis, and the login budgets.

A session exists while `examday:session:{sid}` does: logout, a second login of
the same candidate, or expiry removes it, and the token stops working at once.
Failed logins are counted per IP, per exam and per exam/candidate pair; the
first two answer 429 with Retry-After when spent, while a locked pair answers
exactly like a wrong pair, so that nobody learns which candidate numbers exist.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from infra import tokens
from infra.errors import RateLimited, Unauthenticated
from infra.redis import text
from infra.settings import Settings
from infra.tokens import Claims, Role

WRONG_CREDENTIALS = "wrong_credentials"


@dataclass(frozen=True)
class Session:
    token: str
    claims: Claims
    replaced: str | None  # the sid this login ended, if any


def session_key(sid: str) -> str:
    return f"examday:session:{sid}"


class Sessions:
    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.settings = settings
        self.redis = redis
        self._key = settings.token_signing_key.get_secret_value().encode()

    async def open(self, sub: str, role: Role, exam: str | None, room: str | None) -> Session:
        ttl = self.settings.session_ttl_seconds
        claims = Claims(
            sid=secrets.token_urlsafe(18), sub=sub, role=role, exam=exam, exp=time.time() + ttl
        )
        record = json.dumps({"sub": sub, "role": role, "exam": exam, "room": room})
        owner_key = self._owner_key(role, exam, sub)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(session_key(claims.sid), record, ex=ttl)
            pipe.set(owner_key, claims.sid, ex=ttl, get=True)
            _, previous = await pipe.execute()
        replaced = None
        if previous is not None and role == "candidate":
            # One active session per candidate: the newer login wins.
            replaced = text(previous)
            await self.redis.delete(session_key(replaced))
        return Session(tokens.sign(claims, self._key), claims, replaced)

    async def resolve(self, token: str) -> tuple[Claims, dict[str, str | None]]:
        claims = tokens.verify(token, self._key)
        raw = await self.redis.get(session_key(claims.sid))
        if raw is None:
            raise Unauthenticated("the session has ended", reason="session_ended")
        record: dict[str, str | None] = json.loads(raw)
        return claims, record

    async def end_active(self, role: Role, exam: str | None, sub: str) -> None:
        """End whatever session `sub` has open (a proctor ended the candidate's exam)."""
        sid = await self.redis.getdel(self._owner_key(role, exam, sub))
        if sid is not None:
            await self.redis.delete(session_key(text(sid)))

    def _owner_key(self, role: str, exam: str | None, sub: str) -> str:
        return f"examday:active-session:{role}:{exam or '-'}:{sub}"

    async def close(self, claims: Claims) -> None:
        await self.redis.delete(session_key(claims.sid))

    # -- login budgets -------------------------------------------------------------

    def _budget_keys(self, ip: str, exam: str, pair: str) -> list[tuple[str, int]]:
        s = self.settings
        return [
            (f"examday:login-fail:ip:{ip}", s.login_failures_per_ip),
            (f"examday:login-fail:exam:{exam}", s.login_failures_per_exam),
            (f"examday:login-fail:pair:{pair}", s.login_failures_per_candidate),
        ]

    async def check_budget(self, ip: str, exam: str, pair: str) -> bool:
        """Raise 429 when the IP or exam budget is spent; False when the pair is locked."""
        keys = self._budget_keys(ip, exam, pair)
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, _ in keys:
                pipe.get(key)
                pipe.ttl(key)
            values = await pipe.execute()
        for index, (_key, limit) in enumerate(keys[:2]):
            count, ttl = values[2 * index], values[2 * index + 1]
            if count is not None and int(count) >= limit:
                raise RateLimited(
                    "too many failed logins; wait before trying again",
                    reason="login_rate_limited",
                    retry_after=max(int(ttl), 1),
                )
        pair_count = values[4]
        return pair_count is None or int(pair_count) < keys[2][1]

    async def record_failure(self, ip: str, exam: str, pair: str) -> None:
        window = self.settings.login_window_seconds
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, _ in self._budget_keys(ip, exam, pair):
                # SET NX EX starts the window once; INCR keeps the TTL (Redis 6.2 has no EXPIRE NX).
                pipe.set(key, 0, ex=window, nx=True)
                pipe.incr(key)
            await pipe.execute()

    async def clear_pair(self, pair: str) -> None:
        await self.redis.delete(f"examday:login-fail:pair:{pair}")
