from __future__ import annotations

import json
from typing import Any

import httpx
from fastapi import FastAPI

from api.runtime import Runtime
from core import keys
from infra.settings import Settings
from tests.conftest import http_client
from tests.support.factories import candidate_login, joined_candidate, new_exam


def runtime_of(app: FastAPI) -> Runtime:
    runtime: Runtime = app.state.runtime
    return runtime


async def test_login_consent_join_heartbeat(client: httpx.AsyncClient, app: FastAPI) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["1001", "1002"]})
    headers = await candidate_login(client, world.exam_id, "1001")
    me = (await client.get("/v1/me", headers=headers)).json()
    assert me["needs_consent"] is True
    assert me["room"] == "r1"
    refused = await client.post("/v1/me/join", json={"network": "wifi"}, headers=headers)
    assert refused.status_code == 403
    assert refused.json()["reason"] == "consent_required"
    stale = await client.post("/v1/me/consent", json={"policy_version": "0"}, headers=headers)
    assert stale.json()["reason"] == "stale_policy_version"
    assert (
        await client.post("/v1/me/consent", json={"policy_version": "1"}, headers=headers)
    ).status_code == 204
    joined = await client.post("/v1/me/join", json={"network": "cellular"}, headers=headers)
    assert joined.status_code == 200, joined.text
    assert joined.json()["advice"]["warning"] == "cellular_network"
    beat = await client.post("/v1/me/heartbeat", json={}, headers=headers)
    assert beat.status_code == 200, beat.text
    assert beat.json()["state"] == "joined"
    room = await client.get(f"/v1/exams/{world.exam_id}/rooms/r1", headers=world.proctors["r1"])
    presence = room.json()["presence"][world.candidate_ids["1001"]]
    assert presence["state"] == "joined"
    assert presence["network"] == "cellular"
    assert presence["heartbeats"] == 1


async def test_the_cookie_is_httponly_secure_samesite(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["1001"]}, with_proctors=False)
    response = await client.post(
        "/v1/sessions", json={"exam_no": world.exam_id, "candidate_no": "1001"}
    )
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "secure" in cookie
    assert "samesite=strict" in cookie


async def test_minor_needs_guardian_consent(client: httpx.AsyncClient, app: FastAPI) -> None:
    world = await new_exam(
        client, runtime_of(app), {"r1": ["2001"]}, with_proctors=False, born={"2001": "2012-05-01"}
    )
    headers = await candidate_login(client, world.exam_id, "2001")
    await client.post("/v1/me/consent", json={"policy_version": "1"}, headers=headers)
    refused = await client.post("/v1/me/join", json={}, headers=headers)
    assert refused.status_code == 403
    assert refused.json()["reason"] == "guardian_consent_required"
    cid = world.candidate_ids["2001"]
    recorded = await client.post(
        f"/v1/exams/{world.exam_id}/candidates/{cid}/guardian-consent",
        json={"reference": "GC-2026-0001"},
        headers=world.organiser,
    )
    assert recorded.status_code == 204
    assert (await client.post("/v1/me/join", json={}, headers=headers)).status_code == 200


async def test_wrong_pair_and_locked_pair_look_the_same(app: FastAPI, settings: Settings) -> None:
    async with http_client(settings, source="127.0.0.11") as client:
        world = await new_exam(client, runtime_of(app), {"r1": ["3001"]}, with_proctors=False)
        wrong = await client.post(
            "/v1/sessions", json={"exam_no": world.exam_id, "candidate_no": "9999"}
        )
        assert wrong.status_code == 401
        for _ in range(settings.login_failures_per_candidate):
            await client.post(
                "/v1/sessions", json={"exam_no": world.exam_id, "candidate_no": "3001x"}
            )
        # 3001x is locked now, whether or not it exists; the real 3001 still works.
        assert (
            await client.post(
                "/v1/sessions", json={"exam_no": world.exam_id, "candidate_no": "3001"}
            )
        ).status_code == 201
        runtime = runtime_of(app)
        cid = runtime.exams.candidate_id(world.exam_id, "3001")
        for _ in range(settings.login_failures_per_candidate):
            await runtime.sessions.record_failure("127.0.0.99", world.exam_id, cid)
        locked = await client.post(
            "/v1/sessions", json={"exam_no": world.exam_id, "candidate_no": "3001"}
        )
        assert locked.status_code == wrong.status_code
        strip = {"instance"}
        assert {k: v for k, v in locked.json().items() if k not in strip} == {
            k: v for k, v in wrong.json().items() if k not in strip
        }


async def test_ip_budget_answers_429_with_retry_after(app: FastAPI, settings: Settings) -> None:
    async with http_client(settings, source="127.0.0.12") as client:
        world = await new_exam(client, runtime_of(app), {"r1": ["4001"]}, with_proctors=False)
        statuses = []
        for attempt in range(settings.login_failures_per_ip + 1):
            response = await client.post(
                "/v1/sessions", json={"exam_no": world.exam_id, "candidate_no": f"x{attempt}"}
            )
            statuses.append(response.status_code)
        assert statuses[:-1] == [401] * settings.login_failures_per_ip
        assert statuses[-1] == 429
        assert int(response.headers["retry-after"]) > 0
        assert response.json()["reason"] == "login_rate_limited"
    # Another address is not affected.
    async with http_client(settings, source="127.0.0.13") as other:
        assert (
            await other.post(
                "/v1/sessions", json={"exam_no": world.exam_id, "candidate_no": "4001"}
            )
        ).status_code == 201


async def test_second_login_ends_the_first_and_the_room_sees_it(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["5001"]})
    first = await joined_candidate(client, world.exam_id, "5001")
    second = await candidate_login(client, world.exam_id, "5001")
    ended = await client.get("/v1/me", headers=first)
    assert ended.status_code == 401
    assert ended.json()["reason"] == "session_ended"
    assert (await client.get("/v1/me", headers=second)).status_code == 200
    journal: Any = await runtime_of(app).redis.xrange(keys.room_events_key(f"{world.exam_id}/r1"))
    kinds = [json.loads(fields[b"e"])["type"] for _, fields in journal]
    assert kinds == ["joined", "session_replaced"]
    logout = await client.delete("/v1/sessions/current", headers=second)
    assert logout.status_code == 204
    assert (await client.get("/v1/me", headers=second)).status_code == 401


async def test_forged_and_expired_tokens(client: httpx.AsyncClient, app: FastAPI) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["6001"]}, with_proctors=False)
    headers = await candidate_login(client, world.exam_id, "6001")
    token = headers["authorization"].split()[1]
    payload, mac = token.split(".")
    forged = f"{payload}.{mac[:-2]}AA"
    response = await client.get("/v1/me", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    assert response.json()["reason"] == "invalid_token"
    assert (await client.get("/v1/me")).json()["reason"] == "no_session"
