"""The gateway: a stateless FastAPI app in front of the Ray actors."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import problems, routes
from api.limits import BodyLimitMiddleware
from api.runtime import Runtime
from infra.settings import Settings
from infra.telemetry import setup_tracing

request_log = logging.getLogger("examday.requests")
# Probed every few seconds by every load balancer and kubelet: a line each says nothing.
_PROBES = frozenset({"/healthz", "/readyz"})


class RequestLog:
    """One INFO line per request, inside its SERVER span (so it carries the trace id).

    It names the route template, never the path: paths hold exam and candidate ids.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] in _PROBES
            or not request_log.isEnabledFor(logging.INFO)
        ):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception escaping the app is answered 500 by Starlette

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            request_log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "route": getattr(route, "path", "unmatched"),
                    "status": status,
                    "duration_ms": round(1000 * (time.perf_counter() - started), 2),
                },
            )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    provider = setup_tracing(settings, "gateway")
    # The stable HTTP semantic conventions (http.request.method, http.route, ...);
    # read once by the instrumentation, so it must be set before instrument_app.
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.runtime = await Runtime.open(settings)
        try:
            yield
        finally:
            await app.state.runtime.close()

    app = FastAPI(title="examday", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    problems.install(app)
    for router in routes.all_routers():
        app.include_router(router)
    app.add_middleware(
        BodyLimitMiddleware,
        default=settings.max_request_bytes,
        overrides={
            r"/v1/exams/[^/]+/roster": settings.max_upload_bytes,
            r"/v1/uploads(/.*)?": settings.max_upload_bytes,
            # Face photos from phones run to several megabytes; liveness sends a series.
            r"/v1/exams/[^/]+/candidates/[^/]+/face": settings.max_upload_bytes,
            r"/v1/me/face": settings.max_upload_bytes,
            r"/v1/me/verification": settings.max_upload_bytes,
            r"/v1/me/liveness/challenges/[^/]+": settings.max_upload_bytes,
        },
    )
    # Added last, so outermost of ours: its line times the whole request.
    app.add_middleware(RequestLog)
    # One SERVER span per request; per-message receive/send spans cost more than they tell.
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=provider, excluded_urls="healthz", exclude_spans=["receive", "send"]
    )
    return app
