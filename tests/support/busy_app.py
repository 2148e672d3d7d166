"""An ASGI app whose event loop is always busy, for the gateway's accept test.

A task spends `WORK_S` of CPU in every loop iteration and counts the iterations;
`GET /tick` answers the count at the moment it is served, and the worker's pid.
Connections that wait in the listen queue together and are served a few ticks
apart were accepted together; served one tick apart each, they were accepted one
per iteration.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

WORK_S = 0.02


def create_app() -> FastAPI:
    ticks = 0

    async def busy() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            time.sleep(WORK_S)  # noqa: ASYNC251 - a busy loop is the point
            await asyncio.sleep(0)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(busy())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app = FastAPI(lifespan=lifespan)

    @app.get("/tick")
    async def tick() -> dict[str, int]:
        return {"tick": ticks, "worker": os.getpid()}

    return app
