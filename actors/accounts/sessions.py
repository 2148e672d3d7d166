"""Sessions: signed tokens whose validity lives in Redis, and the login budgets.

A session exists while `examday:session:{sid}` does: logout, a second login of
the same candidate, a proctor's end, or expiry removes it, and the token stops
working at once. A candidate a proctor ended cannot log in until readmitted.
Failed logins are counted per source group (an IPv4 address or an IPv6 /64, see
`sources.py`), per exam and source, per exam, and per candidate pair; staff logins
per source, per (account, source) and per account. A spent budget earns its source
a delay (429 with Retry-After, doubling with each further failure, capped) rather
than a lockout, so that nobody can keep another person from logging in: an exam's
budget only tightens what each failing source may do there, and a staff account's
ceiling spares the sources its owner logged in from. Only a candidate pair is
locked, from every source, and it answers exactly like a wrong pair, so that nobody
learns which candidate numbers exist.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from actors.accounts.sources import source_group
from core import keys
from infra import tokens
from infra.errors import Conflict, Forbidden, RateLimited, Unauthenticated
from infra.redis import text
from infra.settings import Settings
from infra.tokens import Claims, Role

WRONG_CREDENTIALS = "wrong_credentials"


@dataclass(frozen=True)
class Session:
    token: str
    claims: Claims
    replaced: str | None  # the sid this login ended, if any


STAFF_SCOPE = "-staff-"
# How long a staff member's source stays known (spared the account-wide delay) after
# their last login from it.
_KNOWN_SOURCE_SECONDS = 30 * 86400

# Shared by the budget scripts. KEYS[1..5]: source failures, its hold, (scope, source)
# failures, its hold, scope failures. ARGV[1..5]: per source, per scope, window (s),
# base and cap of the delays (ms). A hold is a key whose TTL is the delay it imposes.
_BUDGETS = """
local per_source, per_scope, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local base, cap = tonumber(ARGV[4]), tonumber(ARGV[5])
local function bump(key)
  local n = redis.call('INCR', key)
  redis.call('EXPIRE', key, window)
  return n
end
local function unbump(key)
  local n = redis.call('DECR', key)
  if n <= 0 then redis.call('DEL', key) end
  return n
end
-- The failure that reaches `free`, and each after it, doubles the delay.
local function hold(key, n, free)
  if n >= free then
    local ms = math.min(cap, base * 2 ^ math.min(n - free, 40))
    redis.call('SET', key, '1', 'PX', math.floor(ms))
  end
end
local function wait(...)
  local longest = 0
  for _, key in ipairs({...}) do longest = math.max(longest, redis.call('PTTL', key)) end
  return longest
end
-- Once a scope (an exam, all staff) has had its failures, every source gets just one
-- there before its delays start; a source without failures is never held by it.
local function fail_source()
  hold(KEYS[2], bump(KEYS[1]), per_source)
  local in_scope = bump(KEYS[3])
  if bump(KEYS[5]) >= per_scope then hold(KEYS[4], in_scope, 1) end
end
"""


def _with_budgets(script: str) -> str:
    return _BUDGETS + script


# The whole candidate login in one round trip: budgets, lookup, session, and the end
# of the candidate's previous session. KEYS[6..10]: pair failures, candidate hash, new
# session, active-session pointer, the exam's ended candidates. ARGV[6..15]: per pair,
# cid, exam, ttl, sid, prefix, the exam's login window (opens, ends, now: Unix
# seconds; '' for none), whose end the candidate's accommodation (`extra_minutes`)
# moves, and '1' when the exam is cancelled. A cancelled exam, an ended candidate, or
# one outside the window, is told so only once the pair is right (a wrong pair has
# spent its budget by then), so the answer names no candidate number to a stranger
# and says nothing of an exam to whoever merely knows its id; and in the script that
# opens the session, so that no login checks before the mark and opens after the end.
_CANDIDATE_LOGIN = _with_budgets("""
local held = wait(KEYS[2], KEYS[4])
if held > 0 then return {'rate_limited', held} end
local room = false
if tonumber(redis.call('GET', KEYS[6]) or '0') < tonumber(ARGV[6]) then
  room = redis.call('HGET', KEYS[7], 'room')
end
if not room then
  fail_source()
  bump(KEYS[6])
  return {'wrong'}
end
if ARGV[15] == '1' then return {'cancelled'} end
if redis.call('HEXISTS', KEYS[10], ARGV[7]) == 1 then return {'ended'} end
if ARGV[12] ~= '' and tonumber(ARGV[14]) < tonumber(ARGV[12]) then return {'not_open'} end
local record = cjson.encode({sub = ARGV[7], role = 'candidate', exam = ARGV[8], room = room})
redis.call('SET', KEYS[8], record, 'EX', ARGV[9])
local previous = redis.call('GET', KEYS[9])
redis.call('SET', KEYS[9], ARGV[10], 'EX', ARGV[9])
if previous then redis.call('DEL', ARGV[11] .. previous) end
return {'ok', room, previous or ''}
""")

_CANDIDATE_FAILURE = _with_budgets("""
fail_source()
bump(KEYS[6])
""")

# A staff attempt is counted as a failure before the password is checked (and given
# back on success), so that concurrent guesses cannot all pass one check. KEYS[6..10]:
# (account, source) failures, its hold, account failures, its hold, known sources.
# ARGV[6..9]: per (account, source), per account, the source group, known-source TTL.
_STAFF_ATTEMPT = _with_budgets("""
local held = wait(KEYS[2], KEYS[4], KEYS[7])
if redis.call('SISMEMBER', KEYS[10], ARGV[8]) == 0 then held = math.max(held, wait(KEYS[9])) end
if held > 0 then return {'rate_limited', held} end
fail_source()
hold(KEYS[7], bump(KEYS[6]), tonumber(ARGV[6]))
hold(KEYS[9], bump(KEYS[8]), tonumber(ARGV[7]))
return {'ok'}
""")

_STAFF_SUCCESS = _with_budgets("""
if unbump(KEYS[1]) < per_source then redis.call('DEL', KEYS[2]) end
local in_scope = unbump(KEYS[3])
if unbump(KEYS[5]) < per_scope or in_scope < 1 then redis.call('DEL', KEYS[4]) end
redis.call('DEL', KEYS[6], KEYS[7])
if unbump(KEYS[8]) < tonumber(ARGV[7]) then redis.call('DEL', KEYS[9]) end
redis.call('SADD', KEYS[10], ARGV[8])
redis.call('EXPIRE', KEYS[10], ARGV[9])
""")


class Sessions:
    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.settings = settings
        self.redis = redis
        self._key = settings.token_signing_key.get_secret_value().encode()
        self._candidate_login = redis.register_script(_CANDIDATE_LOGIN)
        self._candidate_failure = redis.register_script(_CANDIDATE_FAILURE)
        self._staff_attempt = redis.register_script(_STAFF_ATTEMPT)
        self._staff_success = redis.register_script(_STAFF_SUCCESS)

    async def candidate_login(
        self,
        source: str,
        exam: str,
        cid: str,
        opens_at: float | None = None,
        *,
        cancelled: bool = False,
    ) -> tuple[Session, str]:
        """Open a candidate's session, or raise exactly as a wrong pair would. Returns the room.

        `cancelled`: the exam was cancelled (403 `exam_cancelled`, to a right pair only).
        `opens_at` (Unix seconds): no login before it (403 `login_not_open`). There is no
        login end: after the exam a candidate still logs in to read the outcome and to use
        their rights (a copy of their data, deletion); joining and publishing are refused
        then (`exam_over`, `core.exam.Schedule`)."""
        s = self.settings
        ttl = s.session_ttl_seconds
        claims = Claims(
            sid=secrets.token_urlsafe(18),
            sub=cid,
            role="candidate",
            exam=exam,
            exp=time.time() + ttl,
        )
        budget_keys = [*self._source_keys(source, exam), keys.login_failures_pair_key(cid)]
        budget_keys += [keys.candidate_key(exam, cid), keys.session_key(claims.sid)]
        budget_keys += [self._owner_key("candidate", exam, cid), keys.ended_candidates_key(exam)]
        args = [*self._budget_args(), s.login_failures_per_candidate, cid, exam, ttl]
        args += [claims.sid, keys.session_key("")]
        args += ["" if opens_at is None else str(opens_at), "", str(time.time())]
        args += ["1" if cancelled else "0"]
        result = await self._candidate_login(keys=budget_keys, args=args)
        outcome = text(result[0])
        if outcome == "rate_limited":
            raise _delayed(int(result[1]))
        if outcome == "cancelled":
            raise Forbidden("this exam was cancelled", reason="exam_cancelled")
        if outcome == "ended":
            raise Forbidden(
                "a proctor ended your exam; ask them to readmit you", reason="ended_by_proctor"
            )
        if outcome == "not_open":
            raise Forbidden("logins for this exam are not open yet", reason="login_not_open")
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
        # The record, not the token, says who the session belongs to: whoever holds the
        # signing key (a leak, an insider) could otherwise re-sign a candidate's session
        # id as an organiser. Same GET as the liveness check, so no extra round trip.
        if (record.get("sub"), record.get("role"), record.get("exam")) != (
            claims.sub,
            claims.role,
            claims.exam,
        ):
            raise Unauthenticated("the token does not match its session", reason="session_mismatch")
        return claims, record

    async def end_active(self, role: Role, exam: str | None, sub: str) -> None:
        """End whatever session `sub` has open (a proctor ended the candidate's exam)."""
        sid = await self.redis.getdel(self._owner_key(role, exam, sub))
        if sid is not None:
            await self.redis.delete(keys.session_key(text(sid)))

    async def end_candidate(self, exam: str, cid: str, by: str) -> None:
        """A proctor ended the candidate's exam: their session ends now and their logins
        are refused (403 `ended_by_proctor`) until `readmit`.

        The mark comes first: a login that ran before it has already set the pointer that
        `end_active` then follows, and one that runs after it is refused."""
        mark = json.dumps({"by": by, "at": time.time()})
        await self.redis.hset(keys.ended_candidates_key(exam), cid, mark)
        await self.end_active("candidate", exam, cid)

    async def readmit(self, exam: str, cid: str, *, late: bool = False) -> None:
        """Let an ended candidate log in again; 409 `not_ended` if nobody ended them,
        unless the readmission is for a candidate refused `too_late` (`late`)."""
        if not await self.redis.hdel(keys.ended_candidates_key(exam), cid) and not late:
            raise Conflict(
                "this candidate's exam was not ended, nor are they too late to join",
                reason="not_ended",
            )

    async def ended(self, exam: str) -> list[str]:
        """The candidates of `exam` a proctor ended and nobody has readmitted yet."""
        return sorted(text(cid) for cid in await self.redis.hkeys(keys.ended_candidates_key(exam)))

    def _owner_key(self, role: str, exam: str | None, sub: str) -> str:
        return keys.active_session_key(role, exam, sub)

    async def close(self, claims: Claims) -> None:
        await self.redis.delete(keys.session_key(claims.sid))

    # -- login budgets -------------------------------------------------------------

    def _source_keys(self, source: str, scope: str) -> list[str]:
        group = source_group(source)
        counters = [keys.login_failures_ip_key(group)]
        counters.append(keys.login_failures_scope_source_key(scope, group))
        return [
            counters[0],
            keys.login_hold_key(counters[0]),
            counters[1],
            keys.login_hold_key(counters[1]),
            keys.login_failures_exam_key(scope),
        ]

    def _budget_args(self) -> list[str | int]:
        s = self.settings
        return [
            s.login_failures_per_ip,
            s.login_failures_per_exam,
            s.login_window_seconds,
            max(1, round(s.login_delay_base_seconds * 1000)),
            max(1, round(s.login_delay_max_seconds * 1000)),
        ]

    async def record_failure(self, source: str, exam: str, cid: str) -> None:
        """Count a failed candidate login, as a wrong pair from `source` would."""
        budget_keys = [*self._source_keys(source, exam), keys.login_failures_pair_key(cid)]
        args = [*self._budget_args(), self.settings.login_failures_per_candidate]
        await self._candidate_failure(keys=budget_keys, args=args)

    def _staff_keys(self, source: str, username: str) -> list[str]:
        pair_source = keys.login_failures_pair_source_key(username, source_group(source))
        account = keys.login_failures_pair_key(username)
        return [
            *self._source_keys(source, STAFF_SCOPE),
            pair_source,
            keys.login_hold_key(pair_source),
            account,
            keys.login_hold_key(account),
            keys.login_known_sources_key(username),
        ]

    def _staff_args(self, source: str) -> list[str | int]:
        s = self.settings
        args = [*self._budget_args(), s.login_failures_per_candidate, s.login_failures_per_account]
        return [*args, source_group(source), _KNOWN_SOURCE_SECONDS]

    async def staff_attempt(self, source: str, username: str) -> None:
        """Raise 429 while a budget holds this attempt; else count it as a failure
        until `staff_succeeded` gives it back."""
        result = await self._staff_attempt(
            keys=self._staff_keys(source, username), args=self._staff_args(source)
        )
        if text(result[0]) == "rate_limited":
            raise _delayed(int(result[1]))

    async def staff_succeeded(self, source: str, username: str) -> None:
        await self._staff_success(
            keys=self._staff_keys(source, username), args=self._staff_args(source)
        )


def _delayed(milliseconds: int) -> RateLimited:
    return RateLimited(
        "too many failed logins; wait before trying again",
        reason="login_rate_limited",
        retry_after=max(math.ceil(milliseconds / 1000), 1),
    )
