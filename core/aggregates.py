"""Reading the live aggregates the ingest script keeps: crash-free sessions, crash counts, usage.

Per app version x platform x device model (and per version x platform over
all models, the `*` model): sessions and crashed sessions are HyperLogLogs of
session pseudonyms (about 0.8% error at scale, exact enough for small
counts), crash reports an exact counter of de-duplicated records. Usage
counters hold a metric name, platform and app version, never an identity.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from redis.asyncio import Redis

from core import keys
from infra.redis import text

_MAX_DIMS = 5000


@dataclass(frozen=True)
class Health:
    platform: str
    app_version: str
    model: str
    sessions: int
    crashed_sessions: int
    crashes: int

    @property
    def crash_rate(self) -> float:
        """Share of sessions with at least one crash."""
        return self.crashed_sessions / self.sessions if self.sessions else 0.0

    def view(self) -> dict[str, Any]:
        crash_free = 1.0 - self.crash_rate if self.sessions else None
        return {**asdict(self), "crash_free_sessions": crash_free}


async def health(redis: Redis, dimensions: list[str]) -> list[Health]:
    async with redis.pipeline(transaction=False) as pipe:
        for dimension in dimensions:
            pipe.pfcount(keys.ingest_sessions_key(dimension))
            pipe.pfcount(keys.ingest_crashed_key(dimension))
        counts: list[Any] = await pipe.execute()
    crashes: list[Any] = await redis.hmget(keys.INGEST_CRASHES, dimensions) if dimensions else []
    found = []
    for index, dimension in enumerate(dimensions):
        platform, version, model = dimension.split("|", 2)
        sessions, crashed = int(counts[2 * index]), int(counts[2 * index + 1])
        crash_count = int(crashes[index] or 0)
        found.append(Health(platform, version, model, sessions, crashed, crash_count))
    return found


async def version_health(redis: Redis, platform: str, version: str) -> Health:
    """All models of one app version on one platform (what the crash gate compares)."""
    return (await health(redis, [keys.dim(platform, version)]))[0]


async def crash_stats(
    redis: Redis, platform: str | None = None, version: str | None = None
) -> list[Health]:
    dimensions = sorted(text(d) for d in await redis.smembers(keys.INGEST_DIMS))[:_MAX_DIMS]
    wanted = [
        d
        for d in dimensions
        if (platform is None or d.split("|")[0] == platform)
        and (version is None or d.split("|")[1] == version)
    ]
    return await health(redis, wanted)


async def usage(redis: Redis, day: str) -> list[dict[str, Any]]:
    raw = await redis.hgetall(keys.analytics_key(day))
    values = {text(k): text(v) for k, v in raw.items()}
    rows = []
    for field, count in sorted(values.items()):
        if field.endswith("|sum"):
            continue
        name, platform, version = field.split("|", 2)
        total = values.get(f"{field}|sum")
        rows.append(
            {
                "name": name,
                "platform": platform,
                "app_version": version,
                "count": int(count),
                "sum": float(total) if total is not None else None,
            }
        )
    return rows
