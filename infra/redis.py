"""The Redis connection every process uses for hot state and journals."""

from __future__ import annotations

import asyncio
from importlib import metadata

from redis.asyncio import BlockingConnectionPool, Redis
from redis.driver_info import DriverInfo
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from infra.errors import DependencyDown, RateLimited
from infra.settings import Settings

# What Redis raises while it is down, restarting or not writable: refused or dropped
# connections, a full pool, a timeout, `LOADING` while it replays its AOF
# (BusyLoadingError, a ConnectionError), a replica's READONLY. The client should come
# back shortly: callers answer `hot_state_down()`, wherever the error was raised
# (in the gateway, or inside an actor: `infra.actor_calls.unwrap`).
REDIS_DOWN: tuple[type[RedisError], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
)


def hot_state_down() -> DependencyDown:
    return DependencyDown("hot state is unavailable", reason="hot_state_down", retry_after=1)


def connect(settings: Settings) -> Redis:
    # bytes in, bytes out: journals carry JSON we decode ourselves. A blocking pool
    # makes a burst wait for a free connection (briefly) instead of failing at once.
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        # Measured on the event loop: a loopback connect takes two or three iterations,
        # and a gateway saturated by a storm runs iterations of a second or more (2 s
        # failed requests as `hot_state_down` while Redis idled). A Redis that is down
        # refuses connections at once; this bounds only one that does not answer.
        socket_connect_timeout=10,
        socket_timeout=10,
        health_check_interval=15,
        max_connections=512,
        timeout=5,
        # Named once here: left unnamed, every new connection looks redis-py's version
        # up in the installed packages' metadata (a scan of site-packages) on the event
        # loop, and a pool grows by many connections at once in a burst.
        driver_info=DriverInfo(name="redis-py", lib_version=metadata.version("redis")),
    )
    return Redis(connection_pool=pool)


async def ping(redis: Redis, within: float = 2.0) -> tuple[bool, str]:
    try:
        await asyncio.wait_for(redis.ping(), within)
    except (RedisError, OSError, TimeoutError) as exc:
        return False, type(exc).__name__
    return True, "ok"


async def over_limit(redis: Redis, key: str, window_s: int, limit: int) -> int | None:
    """Count one more use in `key`'s fixed window of `window_s` seconds; when the count
    is over `limit`, the seconds until the window ends (a Retry-After), else None.
    In Redis, so the limit holds across gateways."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(key, 0, ex=window_s, nx=True)
        pipe.incr(key)
        pipe.ttl(key)
        _, count, ttl = await pipe.execute()
    return max(int(ttl), 1) if int(count) > limit else None


async def spend(
    redis: Redis, key: str, window_s: int, limit: int, *, refusal: str, reason: str
) -> None:
    """Spend one use of `key`'s budget (`over_limit`), or raise 429 `reason` with the
    seconds left in the window as Retry-After."""
    wait = await over_limit(redis, key, window_s, limit)
    if wait is not None:
        raise RateLimited(refusal, reason=reason, retry_after=wait)


def text(value: bytes | str | None) -> str:
    """A Redis reply as text (the client is typed bytes | str; ours returns bytes)."""
    if value is None:
        raise KeyError("missing Redis value")
    return value.decode() if isinstance(value, bytes) else value


def blob(value: bytes | str | None) -> bytes:
    if value is None:
        raise KeyError("missing Redis value")
    return value if isinstance(value, bytes) else value.encode()
