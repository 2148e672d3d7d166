"""Liveness (/healthz) and readiness (/readyz) for load balancers and `examday status`."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import RuntimeDep
from infra import redis as redis_conn
from infra.redis_persistence import persistence
from infra.telemetry import actor_call

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    redis_check, ray_check, *store_checks = await asyncio.gather(
        _timed(_redis(runtime)),
        _timed(_ray(runtime)),
        *(_timed(_store(runtime, region)) for region in runtime.stores.regions),
    )
    checks: dict[str, Any] = {"redis": redis_check, "ray": ray_check}
    for region, check in zip(runtime.stores.regions, store_checks, strict=True):
        checks[f"store:{region}"] = check
    ready = all(check["ok"] for check in checks.values())
    body: dict[str, Any] = {"status": "ready" if ready else "unready", "checks": checks}
    if redis_check["ok"]:
        # Only asked of a Redis that answers; a verdict never makes the gateway unready
        # (every gateway would leave the load balancer at once): it says `degraded`.
        kept = await persistence(runtime.redis)
        checks["redis_persistence"] = {"ok": True, **asdict(kept)}
        if ready and kept.verdict == "degraded":
            body["status"] = "degraded"
            body["reasons"] = [kept.reason]
    return JSONResponse(body, status_code=200 if ready else 503)


async def _timed(probe: Any) -> dict[str, Any]:
    started = time.perf_counter()
    ok, detail = await probe
    return {"ok": ok, "detail": detail, "ms": round((time.perf_counter() - started) * 1000, 1)}


async def _redis(runtime: RuntimeDep) -> tuple[bool, str]:
    return await redis_conn.ping(runtime.redis)


async def _store(runtime: RuntimeDep, region: str) -> tuple[bool, str]:
    health = await runtime.stores.check(region)
    return health.ok, health.detail


async def _ray(runtime: RuntimeDep) -> tuple[bool, str]:
    try:
        await asyncio.wait_for(actor_call(runtime.health_probe.ping), timeout=3)
    except Exception as exc:  # any failure of the round trip means "not ready"
        return False, type(exc).__name__
    return True, "ok"
