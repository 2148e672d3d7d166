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

from core import keys
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


# The whole candidate login in one round trip: budgets, lookup, session, and
# the end of the candidate's previous session. KEYS: ip budget, exam budget,
# pair budget, candidate hash, new session, active-session pointer.
_CANDIDATE_LOGIN = """
for i = 1, 2 do
  local spent = tonumber(redis.call('GET', KEYS[i]) or '0')
  if spent >= tonumber(ARGV[i]) then return {'rate_limited', redis.call('TTL', KEYS[i])} end
end
local room = false
if tonumber(redis.call('GET', KEYS[3]) or '0') < tonumber(ARGV[3]) then
  room = redis.call('HGET', KEYS[4], 'room')
end
if not room then
  for i = 1, 3 do
    redis.call('SET', KEYS[i], 0, 'EX', ARGV[4], 'NX')
    redis.call('INCR', KEYS[i])
  end
  return {'wrong'}
end
local record = cjson.encode({sub = ARGV[5], role = 'candidate', exam = ARGV[6], room = room})
redis.call('SET', KEYS[5], record, 'EX', ARGV[7])
local previous = redis.call('GET', KEYS[6])
redis.call('SET', KEYS[6], ARGV[8], 'EX', ARGV[7])
if previous then redis.call('DEL', ARGV[9] .. previous) end
return {'ok', room, previous or ''}
"""


class Sessions:
    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.settings = settings
        self.redis = redis
        self._key = settings.token_signing_key.get_secret_value().encode()
        self._candidate_login = redis.register_script(_CANDIDATE_LOGIN)

    async def candidate_login(self, ip: str, exam: str, cid: str) -> tuple[Session, str]:
        """Open a candidate's session, or raise exactly as a wrong pair would. Returns the room."""
        s = self.settings
        ttl = s.session_ttl_seconds
        claims = Claims(
            sid=secrets.token_urlsafe(18),
            sub=cid,
            role="candidate",
            exam=exam,
            exp=time.time() + ttl,
        )
        budget_keys = [key for key, _ in self._budget_keys(ip, exam, cid)]
        budget_keys += [keys.candidate_key(exam, cid), keys.session_key(claims.sid)]
        budget_keys += [self._owner_key("candidate", exam, cid)]
        limits = [
            s.login_failures_per_ip,
            s.login_failures_per_exam,
            s.login_failures_per_candidate,
        ]
        args: list[str | int] = [*limits, s.login_window_seconds, cid, exam, ttl]
        args += [claims.sid, keys.session_key("")]
        result = await self._candidate_login(keys=budget_keys, args=args)
        outcome = text(result[0])
        if outcome == "rate_limited":
            raise RateLimited(
                "too many failed logins; wait before trying again",
                reason="login_rate_limited",
                retry_after=max(int(result[1]), 1),
            )
        if outcome != "ok":
            raise Unauthenticated(
                "exam number or candidate number is wrong", reason=WRONG_CREDENTIALS
            )
        replaced = text(result[2]) or None
        return Session(tokens.sign(claims, self._key), claims, replaced), text(result[1])

    async def open(self, sub: str, role: Role, exam: str | None, room: str | None) -> Session:
        ttl = self.settings.session_ttl_seconds
        claims = Claims(
            sid=secrets.token_urlsafe(18), sub=sub, role=role, exam=exam, exp=time.time() + ttl
        )
        record = json.dumps({"sub": sub, "role": role, "exam": exam, "room": room})
        owner_key = self._owner_key(role, exam, sub)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.session_key(claims.sid), record, ex=ttl)
            pipe.set(owner_key, claims.sid, ex=ttl, get=True)
            _, previous = await pipe.execute()
        replaced = None
        if previous is not None and role == "candidate":
            # One active session per candidate: the newer login wins.
            replaced = text(previous)
            await self.redis.delete(keys.session_key(replaced))
        return Session(tokens.sign(claims, self._key), claims, replaced)

    async def resolve(self, token: str) -> tuple[Claims, dict[str, str | None]]:
        claims = tokens.verify(token, self._key)
        raw = await self.redis.get(keys.session_key(claims.sid))
        if raw is None:
            raise Unauthenticated("the session has ended", reason="session_ended")
        record: dict[str, str | None] = json.loads(raw)
        return claims, record

    async def end_active(self, role: Role, exam: str | None, sub: str) -> None:
        """End whatever session `sub` has open (a proctor ended the candidate's exam)."""
        sid = await self.redis.getdel(self._owner_key(role, exam, sub))
        if sid is not None:
            await self.redis.delete(keys.session_key(text(sid)))

    def _owner_key(self, role: str, exam: str | None, sub: str) -> str:
        return keys.active_session_key(role, exam, sub)

    async def close(self, claims: Claims) -> None:
        await self.redis.delete(keys.session_key(claims.sid))

    # -- login budgets -------------------------------------------------------------

    def _budget_keys(self, ip: str, exam: str, pair: str) -> list[tuple[str, int]]:
        s = self.settings
        return [
            (keys.login_failures_ip_key(ip), s.login_failures_per_ip),
            (keys.login_failures_exam_key(exam), s.login_failures_per_exam),
            (keys.login_failures_pair_key(pair), s.login_failures_per_candidate),
        ]

    async def check_budget(self, ip: str, exam: str, pair: str) -> bool:
        """Raise 429 when the IP or exam budget is spent; False when the pair is locked."""
        budgets = self._budget_keys(ip, exam, pair)
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, _ in budgets:
                pipe.get(key)
                pipe.ttl(key)
            values = await pipe.execute()
        for index, (_key, limit) in enumerate(budgets[:2]):
            count, ttl = values[2 * index], values[2 * index + 1]
            if count is not None and int(count) >= limit:
                raise RateLimited(
                    "too many failed logins; wait before trying again",
                    reason="login_rate_limited",
                    retry_after=max(int(ttl), 1),
                )
        pair_count = values[4]
        return pair_count is None or int(pair_count) < budgets[2][1]

    async def record_failure(self, ip: str, exam: str, pair: str) -> None:
        window = self.settings.login_window_seconds
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, _ in self._budget_keys(ip, exam, pair):
                # SET NX EX starts the window once; INCR keeps the TTL (Redis 6.2 has no EXPIRE NX).
                pipe.set(key, 0, ex=window, nx=True)
                pipe.incr(key)
            await pipe.execute()

    async def clear_pair(self, pair: str) -> None:
        await self.redis.delete(keys.login_failures_pair_key(pair))
