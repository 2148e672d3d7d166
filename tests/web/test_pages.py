"""The pages are served with a strict CSP and nothing outside `web/` is reachable."""

from __future__ import annotations

import httpx
import pytest


@pytest.mark.parametrize("path", ["/candidate/", "/console/"])
async def test_pages_carry_a_strict_policy(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert "<script>" not in response.text  # scripts are modules from files only
    assert " style=" not in response.text  # inline styles would break the policy


async def test_modules_are_javascript(client: httpx.AsyncClient) -> None:
    modules = (
        ["app.js", "face.js"],
        ["app.js", "tiles.js", "incidents.js", "reviews.js", "playback.js", "talk.js"],
    )
    paths = [f"/candidate/{m}" for m in modules[0]] + [f"/console/{m}" for m in modules[1]]
    for path in [*paths, "/common/webrtc.js", "/common/http.js", "/common/i18n.js"]:
        response = await client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith("text/javascript")
        assert "localStorage" not in response.text


@pytest.mark.parametrize(
    "path",
    [
        "/candidate/missing.js",
        "/common/index.html",
        "/candidate/..%2Fpyproject.toml",
        "/console/.env",
        "/common/README",
        "/candidate/app.py",
    ],
)
async def test_nothing_else_is_served(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code in (404, 422), (path, response.status_code)
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_bare_paths_redirect(client: httpx.AsyncClient) -> None:
    response = await client.get("/console")
    assert response.status_code == 308
    assert response.headers["location"] == "/console/"
