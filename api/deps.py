"""Dependencies shared by the routers, as Annotated types.

All are `async def`: FastAPI runs a plain `def` dependency in a thread pool,
a thread hop per request for nothing.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from redis.asyncio import Redis
from starlette.requests import HTTPConnection

from api.runtime import Runtime
from infra.objectstore import ObjectStores
from infra.settings import Settings


async def get_runtime(connection: HTTPConnection) -> Runtime:
    # HTTPConnection, not Request: WebSocket routes share these dependencies.
    runtime: Runtime = connection.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_settings(runtime: RuntimeDep) -> Settings:
    return runtime.settings


async def get_redis(runtime: RuntimeDep) -> Redis:
    return runtime.redis


async def get_stores(runtime: RuntimeDep) -> ObjectStores:
    return runtime.stores


SettingsDep = Annotated[Settings, Depends(get_settings)]
RedisDep = Annotated[Redis, Depends(get_redis)]
StoresDep = Annotated[ObjectStores, Depends(get_stores)]
