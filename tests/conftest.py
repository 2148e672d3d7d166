"""One real embedded stack per test session: Redis, SeaweedFS and a Ray node on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import pytest_asyncio
import ray
from fastapi import FastAPI

from infra import raycluster
from infra.settings import Settings
from infra.settings.media import MediaSettings
from infra.stack import LocalStack, isolated_settings
from tests.support.serve import served_gateway


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    # Camera frames sampled every 2 s, so that face incidents show up within a test's time;
    # presence sockets recheck their session every second, so that an ended one does too;
    # HTTP heartbeats up to 400 a minute, since some tests beat every 0.2 s (clients: 5 s).
    media = MediaSettings(sample_interval_s=2.0)
    return isolated_settings(
        tmp_path_factory.mktemp("state"),
        media=media,
        presence_recheck_seconds=1.0,
        heartbeats_per_minute=400,
    )


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Iterator[LocalStack]:
    local = LocalStack(settings, nodes=1, with_gateway=False)
    local.start()
    raycluster.connect(settings)
    try:
        yield local
    finally:
        ray.shutdown()
        local.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def gateway(stack: LocalStack) -> AsyncIterator[FastAPI]:
    """The gateway app, served by uvicorn on loopback inside the test process."""
    async with served_gateway(stack.settings) as application:
        yield application


@pytest.fixture(scope="session")
def app(gateway: FastAPI) -> FastAPI:
    return gateway


def http_client(settings: Settings, source: str = "127.0.0.1") -> httpx.AsyncClient:
    """A client of the test gateway; `source` picks the loopback address it connects from."""
    return httpx.AsyncClient(
        base_url=settings.gateway_url,
        transport=httpx.AsyncHTTPTransport(local_address=source),
        timeout=30,
    )


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def client(gateway: FastAPI, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(settings) as http:
        yield http
