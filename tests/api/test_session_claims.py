"""A token's claims must match its session record in Redis: with the signing key alone
(leaked, or an insider's), a candidate's session cannot be turned into an organiser's."""

from __future__ import annotations

import secrets
import time
from dataclasses import replace

import httpx
from fastapi import FastAPI

from infra import tokens
from infra.settings import Settings
from tests.accounts.test_login import runtime_of
from tests.support.factories import PASSWORD, auth, candidate_login, new_exam


def _resigned(headers: httpx.Headers, settings: Settings, **claims: object) -> httpx.Headers:
    """The same session id, re-signed with the real key under other claims."""
    key = settings.token_signing_key.get_secret_value().encode()
    original = tokens.verify(headers["authorization"][7:], key)
    forged = replace(original, exp=time.time() + 3600, **claims)  # type: ignore[arg-type]
    return auth(tokens.sign(forged, key))


async def test_a_candidate_session_resigned_as_organiser_is_refused(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["7001"]}, with_proctors=False)
    candidate = await candidate_login(client, world.exam_id, "7001")
    organiser = _resigned(candidate, settings, role="organiser", exam=None)
    username = f"mallory-{secrets.token_hex(4)}"
    body = {"username": username, "password": PASSWORD, "role": "organiser"}
    refused = await client.post("/v1/staff", json=body, headers=organiser)
    assert refused.status_code == 401, refused.text
    assert refused.json()["reason"] == "session_mismatch"
    # Nothing was stored: the account the forged organiser asked for does not exist.
    login = await client.post(
        "/v1/staff/sessions", json={"username": username, "password": PASSWORD}
    )
    assert login.status_code == 401
    # The genuine token of the same session still works.
    assert (await client.get("/v1/me", headers=candidate)).status_code == 200


async def test_another_subject_or_exam_on_a_real_session_is_refused(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["7101", "7102"]})
    candidate = await candidate_login(client, world.exam_id, "7101")
    other = world.candidate_ids["7102"]
    for path, forged in (
        ("/v1/me", _resigned(candidate, settings, sub=other)),
        ("/v1/me", _resigned(candidate, settings, exam="ex-elsewhere")),
        ("/v1/staff/me", _resigned(world.proctors["r1"], settings, role="organiser")),
    ):
        response = await client.get(path, headers=forged)
        assert response.status_code == 401, response.text
        assert response.json()["reason"] == "session_mismatch"
