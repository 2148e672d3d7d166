"""What a gateway process holds while it runs: connections, never request state."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from actors import health
from infra import raycluster
from infra import redis as redis_conn
from infra.objectstore import ObjectStores
from infra.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    redis: Redis
    stores: ObjectStores
    health_probe: Any

    @classmethod
    async def open(cls, settings: Settings) -> Runtime:
        await asyncio.to_thread(raycluster.connect, settings)
        probe = await asyncio.to_thread(health.get_or_create, settings)
        return cls(
            settings=settings,
            redis=redis_conn.connect(settings),
            stores=ObjectStores(settings),
            health_probe=probe,
        )

    async def close(self) -> None:
        await self.redis.aclose()
