"""Fixtures of the media-plane tests: the gateway's media plane, peers, dedicated shards."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any, Protocol

import pytest_asyncio
import ray
from fastapi import FastAPI

from actors.media.client import MediaPlane
from actors.media.shard import shard_name
from api.runtime import Runtime
from infra.settings import Settings
from tests.support.wait import until


class Closeable(Protocol):
    async def close(self) -> None: ...


def runtime_of(app: FastAPI) -> Runtime:
    runtime: Runtime = app.state.runtime
    return runtime


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def media(app: FastAPI) -> MediaPlane:
    """The gateway's media plane, once its pool shard reports its load."""
    plane = runtime_of(app).media
    pool = shard_name(0)

    async def reporting() -> bool:
        return bool(await plane.router.loads([pool]))

    await until(reporting, within=60, every=0.1)
    return plane


class Peers:
    """Closes the test's peer connections, whatever the test's outcome."""

    def __init__(self) -> None:
        self.items: list[Closeable] = []

    def keep(self, peer: Any) -> Any:
        self.items.append(peer)
        return peer

    async def close(self) -> None:
        for peer in self.items:
            await peer.close()


@pytest_asyncio.fixture
async def peers() -> AsyncIterator[Peers]:
    kept = Peers()
    try:
        yield kept
    finally:
        await kept.close()


@contextlib.asynccontextmanager
async def dedicated_shard(
    media: MediaPlane, settings: Settings, room: str, **media_settings: Any
) -> AsyncIterator[str]:
    """A shard of its own (not in the pool) holding `room`, with its own media settings."""
    name = f"media-shard-test-{secrets.token_hex(3)}"
    own = settings.model_copy(update={"media": settings.media.model_copy(update=media_settings)})
    await media.router.add_shard(name, own, pool=False)
    await media.router.assign(room, name)
    try:
        await media.router.ping(name)
        yield name
    finally:
        with contextlib.suppress(Exception):  # it may be gone already
            handle = await media.router.handle(name)
            await asyncio.wait_for(media.router.drain(name), 30)
            await asyncio.to_thread(ray.kill, handle, no_restart=True)
