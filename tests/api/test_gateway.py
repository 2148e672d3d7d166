from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from infra import services
from infra.stack import LocalStack, read_manifest


class _Echo(BaseModel):
    text: str


@pytest.fixture(scope="module", autouse=True)
def echo_route(app: FastAPI) -> None:
    # A JSON route to exercise the body handling shared by every real route.
    if not any(getattr(r, "path", "") == "/test-echo" for r in app.router.routes):

        @app.post("/test-echo")
        async def echo(body: _Echo) -> _Echo:
            return body


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_reports_every_part(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    body = response.json()
    assert response.status_code == 200, body
    parts = {"redis", "redis_persistence", "ray", "store:cn-north", "store:cn-east"}
    assert set(body["checks"]) == parts
    assert all(check["ok"] for check in body["checks"].values())
    # The test stack's Redis keeps an append-only file, as every embedded one does.
    assert body["checks"]["redis_persistence"]["verdict"] == "ok", body
    assert body["status"] == "ready", body


def _assert_problem(response: httpx.Response, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert body["reason"] == reason
    assert body["type"].endswith(reason)
    assert {"title", "detail", "instance"} <= set(body)


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/test-echo", content=b'{"text": ', headers={"content-type": "application/json"}
    )
    _assert_problem(response, 400, "malformed_json")


async def test_schema_mismatch_is_422_with_fields(client: httpx.AsyncClient) -> None:
    response = await client.post("/test-echo", json={"text": 5})
    _assert_problem(response, 422, "invalid_input")
    assert response.json()["errors"][0]["loc"] == ["body", "text"]


async def test_oversized_body_is_413(client: httpx.AsyncClient, stack: LocalStack) -> None:
    limit = stack.settings.max_request_bytes
    response = await client.post("/test-echo", json={"text": "x" * (limit + 1)})
    _assert_problem(response, 413, "payload_too_large")


async def test_oversized_streamed_body_is_413(client: httpx.AsyncClient, stack: LocalStack) -> None:
    limit = stack.settings.max_request_bytes

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536

    response = await client.post(
        "/test-echo", content=chunks(), headers={"content-type": "application/json"}
    )
    _assert_problem(response, 413, "payload_too_large")


async def test_unknown_route_is_404(client: httpx.AsyncClient) -> None:
    _assert_problem(await client.get("/no/such/route"), 404, "not_found")


async def test_wrong_method_is_405(client: httpx.AsyncClient) -> None:
    _assert_problem(await client.delete("/healthz"), 405, "method_not_allowed")


async def test_store_down_makes_readyz_503_and_healthz_200(
    client: httpx.AsyncClient, stack: LocalStack
) -> None:
    weed = next(p for p in stack.processes if p.name == "seaweedfs")
    weed.stop()
    try:
        response = await client.get("/readyz")
        assert response.status_code == 503
        checks = response.json()["checks"]
        assert checks["store:cn-north"]["ok"] is False
        assert checks["store:cn-east"]["ok"] is False
        assert checks["redis"]["ok"] is True
        assert checks["ray"]["ok"] is True
        assert (await client.get("/healthz")).status_code == 200
    finally:
        weed.start()
        weed.wait_healthy(lambda: services.seaweed_healthy(stack.settings), 60)
    assert (await client.get("/readyz")).status_code == 200
    # Whoever started it again (this test or the stack's supervisor), the manifest that
    # `examday status` and the load tester's sampler read names the running one.
    manifest = read_manifest(stack.settings.state_dir)
    assert manifest is not None
    assert manifest["services"]["seaweedfs"] == weed.pid
