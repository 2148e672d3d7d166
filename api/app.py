"""The gateway: a stateless FastAPI app in front of the Ray actors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

from api import problems, routes
from api.limits import AdmissionMiddleware, BodyLimitMiddleware
from api.metrics import watch_loop_lag
from api.request_telemetry import RequestTelemetry
from api.runtime import Runtime
from infra.settings import Settings
from infra.telemetry import setup_tracing


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    provider = setup_tracing(settings, "gateway")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.runtime = await Runtime.open(settings)
        lag = asyncio.create_task(watch_loop_lag())
        try:
            yield
        finally:
            lag.cancel()
            await asyncio.gather(lag, return_exceptions=True)
            await app.state.runtime.close()

    # FastAPI's own telemetry would trace and meter every request a second time,
    # recording its raw path; `RequestTelemetry` does it once, without personal data.
    no_native_telemetry: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
    app = FastAPI(
        title="examday", version="0.1.0", lifespan=lifespan, telemetry=no_native_telemetry
    )
    app.state.settings = settings
    problems.install(app)
    for router in routes.all_routers():
        app.include_router(router)
    # Inside the body limits: a refused request's body is read and dropped within them.
    app.add_middleware(
        AdmissionMiddleware,
        limit=settings.gateway_max_waiting_requests,
        staff_reserve=settings.gateway_staff_reserved_requests,
        token_key=settings.token_signing_key.get_secret_value().encode(),
    )
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
    # Added last, so outermost: its span and log line time the whole request.
    app.add_middleware(RequestTelemetry, tracer_provider=provider)
    return app
