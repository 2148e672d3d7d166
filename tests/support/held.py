"""Routes added to the test gateway that hold their requests until a test lets them go,
so that a test can fill a gateway process to its admission limit
(`api.limits.AdmissionMiddleware`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from api.limits import CALLERS, AdmissionMiddleware, Caller
from api.metrics import POD_METRICS, REFUSED, WAITING
from infra.settings import Settings

# The texts `POST /test-work` was given, in order: what ran.
RAN: list[str] = []


class Work(BaseModel):
    # A model, as every real route's body: the API's own tests read the OpenAPI schema
    # of every route of the shared gateway, these included.
    text: str


class Gate:
    """Held requests wait on it; made on the gateway's loop, at first use."""

    event: asyncio.Event | None = None

    @classmethod
    def get(cls) -> asyncio.Event:
        if cls.event is None:
            cls.event = asyncio.Event()
        return cls.event

    @classmethod
    def closed(cls) -> asyncio.Event:
        """A new gate, closed: requests held from now on wait for its `set()`."""
        cls.event = None
        return cls.get()


def add_held_routes(app: FastAPI) -> None:
    """`GET /test-held` (answers once the gate opens), `POST /test-work` (records its
    text in `RAN`), `GET /test-stream` (a first line at once, the end once the gate opens)."""
    if any(getattr(r, "path", "") == "/test-held" for r in app.router.routes):
        return

    @app.get("/test-held")
    async def held() -> dict[str, bool]:
        await Gate.get().wait()
        return {"held": True}

    @app.post("/test-work")
    async def work(body: Work) -> Work:
        RAN.append(body.text)
        return body

    @app.get("/test-stream")
    async def stream() -> StreamingResponse:
        async def lines() -> AsyncIterator[bytes]:
            yield b"first\n"
            await Gate.get().wait()

        return StreamingResponse(lines(), media_type="text/plain")


# The bound the tests fill: the default (1024) would take 1,024 connections a test.
TEST_LIMIT = 32


def admission(app: FastAPI) -> AdmissionMiddleware:
    """The running gateway's `AdmissionMiddleware`, found in the app's middleware stack."""
    layer: Any = app.middleware_stack
    while layer is not None and not isinstance(layer, AdmissionMiddleware):
        layer = getattr(layer, "app", None)
    assert layer is not None, "no AdmissionMiddleware in the gateway's middleware stack"
    return layer


@contextmanager
def admission_limit(
    app: FastAPI, limit: int = TEST_LIMIT, staff_reserve: int | None = None
) -> Iterator[int]:
    """The running gateway's admission bound set to `limit` (and the staff's reserve to
    `staff_reserve`, if given) for the block, then set back."""
    layer = admission(app)
    before = (layer.limit, layer.staff_reserve)
    layer.limit = limit
    if staff_reserve is not None:
        layer.staff_reserve = staff_reserve
    try:
        yield limit
    finally:
        layer.limit, layer.staff_reserve = before


def many_connections(settings: Settings, connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=settings.gateway_url,
        limits=httpx.Limits(max_connections=connections),
        timeout=60,
    )


def waiting() -> float:
    """This process's gateway requests admitted and not yet answered."""
    return POD_METRICS.registry.get_sample_value(WAITING) or 0.0


def refused(caller: Caller | None = None) -> float:
    """Requests this process's gateway refused as busy: of `caller`, or all."""
    callers = CALLERS if caller is None else (caller,)
    registry = POD_METRICS.registry
    return sum(registry.get_sample_value(f"{REFUSED}_total", {"caller": c}) or 0.0 for c in callers)


async def until_refused(before: float, pending: asyncio.Future[Any]) -> None:
    """Wait until the gateway has refused a request since `refused()` was `before`
    (`pending` is the request's sender: should it end first, the refusal never came)."""
    for _ in range(600):
        if refused() > before or pending.done():
            break
        await asyncio.sleep(0.02)
    assert refused() > before, "the gateway never refused the request"


async def fill(
    http: httpx.AsyncClient, count: int, headers: httpx.Headers | None = None
) -> list[asyncio.Task[httpx.Response]]:
    """`count` more held requests (sent with `headers`), once the gateway counts them all
    at work beside those it held already."""
    target = waiting() + count
    held = [asyncio.create_task(http.get("/test-held", headers=headers)) for _ in range(count)]
    for _ in range(1200):
        if waiting() >= target:
            return held
        await asyncio.sleep(0.05)
    raise AssertionError(f"never {target} requests at work")
