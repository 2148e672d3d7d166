"""Dependencies shared by the routers, as Annotated types."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis

from api.runtime import Runtime
from infra.objectstore import ObjectStores
from infra.settings import Settings


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_settings(runtime: RuntimeDep) -> Settings:
    return runtime.settings


def get_redis(runtime: RuntimeDep) -> Redis:
    return runtime.redis


def get_stores(runtime: RuntimeDep) -> ObjectStores:
    return runtime.stores


SettingsDep = Annotated[Settings, Depends(get_settings)]
RedisDep = Annotated[Redis, Depends(get_redis)]
StoresDep = Annotated[ObjectStores, Depends(get_stores)]
