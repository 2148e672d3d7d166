"""Heartbeats over the presence socket: journaled like HTTP beats, refused input
answered with a problem and never journaled, and the socket closed when its
session ends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import httpx
from fastapi import FastAPI

from api.routes.presence import CLOSE_POLICY, CLOSE_SESSION_ENDED, MAX_BAD_MESSAGES, PATH
from core import keys
from infra.settings import Settings
from tests.accounts.test_login import runtime_of
from tests.support.factories import candidate_login, joined_candidate, new_exam
from tests.support.journal import room_journal


async def _journal(app: FastAPI, key: str) -> list[dict[str, Any]]:
    return [event for _, event in await room_journal(runtime_of(app).redis, key)]


@asynccontextmanager
async def _socket(
    settings: Settings, headers: dict[str, str]
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with (
        aiohttp.ClientSession(settings.gateway_url) as http,
        http.ws_connect(PATH, headers=headers) as ws,
    ):
        yield ws


async def _ask(ws: aiohttp.ClientWebSocketResponse, message: str | bytes) -> dict[str, Any]:
    await (ws.send_bytes(message) if isinstance(message, bytes) else ws.send_str(message))
    answer: dict[str, Any] = json.loads(await asyncio.wait_for(ws.receive_str(), 10))
    return answer


def _upgrade_headers() -> dict[str, str]:
    return {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }


async def _joined(
    client: httpx.AsyncClient, app: FastAPI, room: str
) -> tuple[str, dict[str, str], str]:
    """A fresh exam with one joined candidate in `room`: (exam id, their headers, room key)."""
    number = f"{room}001"
    world = await new_exam(client, runtime_of(app), {room: [number]})
    headers = await joined_candidate(client, world.exam_id, number)
    return world.exam_id, dict(headers), keys.room_key(world.exam_id, room)


async def test_beats_on_the_socket_are_journaled_once_each(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    _, headers, key = await _joined(client, app, "p1")
    async with _socket(settings, headers) as ws:
        first = await _ask(ws, json.dumps({"id": "beat-1", "network": "cellular"}))
        assert first["id"] == "beat-1"
        assert first["state"] == "joined"
        await asyncio.sleep(settings.presence_min_interval_seconds)
        again = await _ask(ws, json.dumps({"id": "beat-1", "network": "cellular"}))
        assert again["event_id"] == first["event_id"]  # a retried beat, not a second one
    beats = [e for e in await _journal(app, key) if e["type"] == "heartbeat"]
    assert [(e["eid"], e["network"]) for e in beats] == [("beat-1", "cellular")]
    view = await runtime_of(app).rooms.room_view(key)
    (presence,) = view["presence"].values()
    assert presence["network"] == "cellular"


async def test_handshakes_without_a_joined_candidate_are_refused_with_a_problem(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    world = await new_exam(client, runtime_of(app), {"p2": ["p2001"]})
    anonymous = await client.get(PATH, headers=_upgrade_headers())
    assert anonymous.status_code == 401
    assert anonymous.json()["reason"] == "no_session"
    staff = await client.get(PATH, headers={**_upgrade_headers(), **world.organiser})
    assert staff.status_code == 403
    assert staff.json()["reason"] == "candidates_only"
    forged = await client.get(
        PATH, headers={**_upgrade_headers(), "Authorization": "Bearer not-a-token"}
    )
    assert forged.status_code == 401


async def test_bad_messages_get_a_reason_and_are_not_journaled(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    _, headers, key = await _joined(client, app, "p3")
    before = len(await _journal(app, key))
    async with _socket(settings, headers) as ws:
        refused = [
            await _ask(ws, "not json"),
            await _ask(ws, json.dumps({"network": "carrier-pigeon"})),
            await _ask(ws, json.dumps({"id": "x", "extra": 1})),
            await _ask(ws, json.dumps({"id": "x" * 600})),
            await _ask(ws, b'{"id": "binary"}'),
        ]
        reasons = [answer["error"]["reason"] for answer in refused]
        assert reasons == ["invalid_heartbeat"] * 3 + ["message_too_large", "invalid_heartbeat"]
        assert [answer["error"]["status"] for answer in refused] == [422] * 3 + [413, 422]
        assert (await _ask(ws, json.dumps({"id": "ok-1"})))["state"] == "joined"
        too_soon = await _ask(ws, json.dumps({"id": "ok-2"}))
        assert too_soon["error"]["reason"] == "too_many_heartbeats"
        assert too_soon["error"]["status"] == 429
        for _ in range(MAX_BAD_MESSAGES - len(refused) - 1):
            assert "error" in await _ask(ws, "{}{}")
        closing = await asyncio.wait_for(ws.receive(), 10)
        assert closing.type == aiohttp.WSMsgType.CLOSE
        assert closing.data == CLOSE_POLICY
    journaled = (await _journal(app, key))[before:]
    assert [e["eid"] for e in journaled] == ["ok-1"]


async def test_a_replaced_session_closes_its_socket(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    exam_id, headers, key = await _joined(client, app, "p4")
    async with _socket(settings, headers) as ws:
        assert (await _ask(ws, json.dumps({"id": "before"})))["state"] == "joined"
        await candidate_login(client, exam_id, "p4001")  # a newer login wins
        await asyncio.sleep(
            max(settings.presence_min_interval_seconds, settings.presence_recheck_seconds)
        )
        await ws.send_str(json.dumps({"id": "after"}))
        closing = await asyncio.wait_for(ws.receive(), 10)
        assert closing.type == aiohttp.WSMsgType.CLOSE
        assert closing.data == CLOSE_SESSION_ENDED
    eids = [e.get("eid") for e in await _journal(app, key)]
    assert "before" in eids
    assert "after" not in eids


async def test_at_the_exams_end_the_socket_closes_and_the_session_ends(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    # A candidate who beats only on the socket is ended at their end as an HTTP beat is.
    end = datetime.now(UTC) + timedelta(seconds=8)
    world = await new_exam(
        client,
        runtime_of(app),
        {"p5": ["p5001"]},
        starts_at=(datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
        ends_at=end.isoformat(),
    )
    headers = dict(await joined_candidate(client, world.exam_id, "p5001"))
    key = keys.room_key(world.exam_id, "p5")
    async with _socket(settings, headers) as ws:
        assert (await _ask(ws, json.dumps({"id": "before"})))["state"] == "joined"
        await asyncio.sleep((end - datetime.now(UTC)).total_seconds() + 0.5)
        await asyncio.sleep(settings.presence_recheck_seconds)
        await ws.send_str(json.dumps({"id": "after"}))
        closing = await asyncio.wait_for(ws.receive(), 10)
        assert closing.type == aiohttp.WSMsgType.CLOSE
        assert closing.data == CLOSE_SESSION_ENDED
        assert ws.close_code == CLOSE_SESSION_ENDED
    assert (await client.get("/v1/me", headers=headers)).status_code == 401
    left = [e for e in await _journal(app, key) if e.get("type") == "left"]
    assert [e.get("why") for e in left] == ["exam_over"]
    assert "after" not in [e.get("eid") for e in await _journal(app, key)]
