"""Whether the Redis we run on keeps what it is told across a restart.

Staff accounts, exams, rosters, consents, room journals and audit chain heads live
only in Redis: a Redis without persistence loses all of them at its next restart.
`/readyz` and `examday status` ask it (`CONFIG GET appendonly`, `save`) and report
`degraded` with a reason, not `unready`: the platform works, it is one restart away
from losing the day. A managed Redis that refuses CONFIG gets `unknown`, never a
failure of the probe.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

Verdict = Literal["ok", "degraded", "unknown"]


@dataclass(frozen=True)
class Persistence:
    verdict: Verdict
    # Machine-readable: redis_aof, redis_snapshots_only, redis_not_persistent,
    # redis_config_refused, redis_unreachable.
    reason: str
    detail: str


async def _config(redis: Redis, name: str) -> str:
    reply = await redis.config_get(name)
    for key, value in reply.items():
        if (key.decode() if isinstance(key, bytes) else str(key)) == name:
            return value.decode() if isinstance(value, bytes) else str(value)
    return ""


async def persistence(redis: Redis, within: float = 2.0) -> Persistence:
    """The verdict on `redis`'s persistence (its primary's settings, as this client sees them)."""
    try:
        appendonly, fsync, save = await asyncio.wait_for(
            asyncio.gather(
                _config(redis, "appendonly"),
                _config(redis, "appendfsync"),
                _config(redis, "save"),
            ),
            within,
        )
    except ResponseError as exc:
        # CONFIG renamed, disabled or not granted by an ACL (common on managed Redis).
        return Persistence(
            "unknown",
            "redis_config_refused",
            f"CONFIG GET refused ({exc}); check that the server keeps an append-only file",
        )
    except (RedisError, OSError, TimeoutError) as exc:
        return Persistence("unknown", "redis_unreachable", type(exc).__name__)
    if appendonly == "yes":
        return Persistence("ok", "redis_aof", f"append-only file, appendfsync {fsync}")
    if save.strip():
        return Persistence(
            "degraded",
            "redis_snapshots_only",
            f"no append-only file, RDB snapshots only (save '{save}'): a crash of Redis"
            " loses every write since the last snapshot; set appendonly yes",
        )
    return Persistence(
        "degraded",
        "redis_not_persistent",
        "no append-only file and no snapshots: a restart of Redis loses every account,"
        " exam, roster, consent and room journal; set appendonly yes",
    )
