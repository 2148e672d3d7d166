"""Cross-origin request forgery: a request the session cookie authenticates must come
from the gateway's own pages (`Origin`) when it changes state or opens the presence
socket; a bearer token, which no page can make a browser send, needs no `Origin`."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlparse

import aiohttp
import httpx
import pytest
from fastapi import FastAPI

from api.routes.presence import PATH as PRESENCE
from api.security import COOKIE_NAME
from infra.settings import Settings
from tests.accounts.test_login import runtime_of
from tests.support.factories import candidate_login, joined_candidate, new_exam

FOREIGN = "https://evil.example"


def _cookie(headers: httpx.Headers) -> dict[str, str]:
    """The candidate's session as a browser sends it: the cookie, no Authorization."""
    return {"Cookie": f"{COOKIE_NAME}={headers['authorization'][7:]}"}


def _foreign_origins(settings: Settings) -> list[str | None]:
    """Another site, the same host on another port (same *site*, so SameSite lets the
    cookie through), and no Origin at all."""
    port = urlparse(settings.gateway_url).port
    return [FOREIGN, f"http://127.0.0.1:{(port or 80) + 1}", None]


async def _consented(client: httpx.AsyncClient, headers: httpx.Headers) -> str | None:
    me = await client.get("/v1/me", headers=headers)
    assert me.status_code == 200, me.text
    consented: str | None = me.json()["consented_version"]
    return consented


async def test_a_cookie_request_from_another_origin_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["8001"]}, with_proctors=False)
    bearer = await candidate_login(client, world.exam_id, "8001")
    cookie = _cookie(bearer)
    for origin in _foreign_origins(settings):
        headers = cookie if origin is None else {**cookie, "Origin": origin}
        refused = await client.post("/v1/me/consent", json={"policy_version": "1"}, headers=headers)
        assert refused.status_code == 403, (origin, refused.text)
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["reason"] == "bad_origin"
        logout = await client.delete("/v1/sessions/current", headers=headers)
        assert logout.json()["reason"] == "bad_origin"
    assert await _consented(client, bearer) is None  # nothing stored, session still open
    # A read is no forgery: the cookie works from anywhere for GET.
    read = await client.get("/v1/me", headers={**cookie, "Origin": FOREIGN})
    assert read.status_code == 200
    # The gateway's own pages may.
    same = {**cookie, "Origin": settings.gateway_url}
    accepted = await client.post("/v1/me/consent", json={"policy_version": "1"}, headers=same)
    assert accepted.status_code == 204, accepted.text
    assert await _consented(client, bearer) == "1"


async def test_a_bearer_request_needs_no_origin(client: httpx.AsyncClient, app: FastAPI) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["8101"]}, with_proctors=False)
    bearer = await candidate_login(client, world.exam_id, "8101")
    response = await client.post(
        "/v1/me/consent", json={"policy_version": "1"}, headers={**bearer, "Origin": FOREIGN}
    )
    assert response.status_code == 204, response.text


def _upgrade(headers: dict[str, str]) -> dict[str, str]:
    return {
        **headers,
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }


async def test_the_presence_socket_checks_the_origin_of_a_cookie(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["8201"]}, with_proctors=False)
    cookie = _cookie(await joined_candidate(client, world.exam_id, "8201"))
    for origin in _foreign_origins(settings):
        headers = cookie if origin is None else {**cookie, "Origin": origin}
        refused = await client.get(PRESENCE, headers=_upgrade(headers))
        assert refused.status_code == 403, (origin, refused.text)
        assert refused.json()["reason"] == "bad_origin"
    async with aiohttp.ClientSession(settings.gateway_url) as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as hijack:
            await http.ws_connect(PRESENCE, headers={**cookie, "Origin": FOREIGN})
        assert hijack.value.status == 403
        same = {**cookie, "Origin": settings.gateway_url}
        async with http.ws_connect(PRESENCE, headers=same) as ws:
            await ws.send_str(json.dumps({"id": "same-origin"}))
            answer = json.loads(await asyncio.wait_for(ws.receive_str(), 10))
            assert answer["state"] == "joined", answer
