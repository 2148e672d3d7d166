"""The Redis connection every process uses for hot state and journals."""

from __future__ import annotations

import asyncio
from importlib import metadata

from redis.asyncio import BlockingConnectionPool, Redis
from redis.driver_info import DriverInfo
from redis.exceptions import RedisError

from infra.settings import Settings


def connect(settings: Settings) -> Redis:
    # bytes in, bytes out: journals carry JSON we decode ourselves. A blocking pool
    # makes a burst wait for a free connection (briefly) instead of failing at once.
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        socket_connect_timeout=2,
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


def text(value: bytes | str | None) -> str:
    """A Redis reply as text (the client is typed bytes | str; ours returns bytes)."""
    if value is None:
        raise KeyError("missing Redis value")
    return value.decode() if isinstance(value, bytes) else value


def blob(value: bytes | str | None) -> bytes:
    if value is None:
        raise KeyError("missing Redis value")
    return value if isinstance(value, bytes) else value.encode()
