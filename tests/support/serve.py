"""A gateway app served by uvicorn inside the test process, for as long as a block runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from api.app import create_app
from infra.settings import Settings


@asynccontextmanager
async def served_gateway(settings: Settings) -> AsyncIterator[FastAPI]:
    """`create_app(settings)` on `settings.gateway_host:gateway_port` until the block ends."""
    application = create_app(settings)
    config = uvicorn.Config(
        application,
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_level="warning",
        lifespan="on",
        timeout_keep_alive=75,
        proxy_headers=False,  # as infra/services.py starts it: the app judges X-Forwarded-For
    )
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        assert not task.done(), "the gateway did not start"
        await asyncio.sleep(0.05)
    try:
        yield application
    finally:
        server.should_exit = True
        await task
