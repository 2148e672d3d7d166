"""Every route that takes an id refuses callers of another exam or room.

The route table is read from the app, so a new route is covered as soon as it
exists; a path parameter this test does not know fails it until it is added.
"""

from __future__ import annotations

import re
import secrets

import httpx
from fastapi import FastAPI

from tests.accounts.test_login import runtime_of
from tests.support.factories import ExamWorld, candidate_login, new_exam

# Parameters whose value is another exam's resource; anything else gets a random id.
SCOPED = {"exam_id", "room_id", "candidate_id"}
OPAQUE = {
    "index",
    "hold_id",
    "export_id",
    "upload_id",
    "incident_id",
    "username",
    "session_id",
    "review_id",
    "nonce",
    "segment",
    "release_id",
    "version",
}


def _routes(app: FastAPI) -> list[tuple[str, str, set[str]]]:
    """Every (method, path) of the public API, from the app's own OpenAPI document."""
    found = []
    for path, operations in app.openapi()["paths"].items():
        params = set(re.findall(r"{(\w+)}", path))
        if not params:
            continue
        for method in sorted(operations):
            if method.upper() not in ("HEAD", "OPTIONS"):
                found.append((method.upper(), path, params))
    return found


NUMERIC = {"index", "segment"}


def _fill(path: str, values: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in values:
            return values[name]
        return str(secrets.randbelow(1000)) if name in NUMERIC else secrets.token_hex(6)

    return re.sub(r"{(\w+)(?::\w+)?}", value, path)


async def test_every_id_route_refuses_other_exams_and_rooms(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    mine: ExamWorld = await new_exam(client, runtime, {"r1": ["1001"], "r2": ["1002"]})
    other: ExamWorld = await new_exam(client, runtime, {"r9": ["9001"]})
    me = await candidate_login(client, mine.exam_id, "1001")
    callers = {"organiser": mine.organiser, "proctor": mine.proctors["r1"], "candidate": me}
    theirs = {
        "exam_id": other.exam_id,
        "room_id": "r9",
        "candidate_id": other.candidate_ids["9001"],
    }
    # Same exam, but a room the proctor does not have, and a candidate of that other room.
    next_door = {
        "exam_id": mine.exam_id,
        "room_id": "r2",
        "candidate_id": mine.candidate_ids["1002"],
    }
    # The caller's own room with a candidate of another exam.
    stranger = {
        "exam_id": mine.exam_id,
        "room_id": "r1",
        "candidate_id": other.candidate_ids["9001"],
    }

    routes = _routes(app)
    unknown = {p for _, _, params in routes for p in params} - SCOPED - OPAQUE
    assert unknown == set(), f"teach this test what these path parameters hold: {unknown}"
    assert len(routes) >= 10
    # The same callers do reach their own resources: the refusals below are about ids.
    own = f"/v1/exams/{mine.exam_id}/rooms/r1"
    assert (await client.get(own, headers=callers["proctor"])).status_code == 200
    assert (await client.get(own, headers=callers["organiser"])).status_code == 200
    failures = []
    checked = 0
    for method, path, params in routes:
        if not params & SCOPED:
            continue
        cases = [("other exam", theirs, callers)]
        if "room_id" in params:
            cases.append(
                ("room not assigned", next_door, {"proctor": callers["proctor"], "candidate": me})
            )
        if "candidate_id" in params and "room_id" in params:
            cases.append(("candidate of another exam", stranger, callers))
        for label, values, who in cases:
            url = _fill(path, values)
            for role, headers in who.items():
                response = await client.request(method, url, headers=headers, json={})
                checked += 1
                if response.status_code not in (403, 404):
                    status = f"{response.status_code} {response.text[:400]}"
                    failures.append(f"{method} {path} [{label}] as {role}: {status}")
    print(f"{checked} requests over {len(routes)} routes, {len(failures)} not refused")
    assert failures == []
