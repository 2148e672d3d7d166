"""Every route that takes an id refuses callers of another exam or room.

The route table is read from the app, so a new route is covered as soon as it
exists: a path parameter, a body field or a query parameter this test does not
know fails it until it is added. Ids are filled with real resources of another
exam (or of another room of the caller's own exam) wherever the factories make
one cheaply, and what those requests could have changed is read back after.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from api.runtime import Runtime
from core import keys
from tests.accounts.test_login import runtime_of
from tests.privacy.conftest import image_bytes, image_headers
from tests.support.factories import (
    ExamWorld,
    candidate_login,
    joined_candidate,
    new_exam,
    staff_login,
)

# Path parameters whose value is another exam's resource (the scope of the route).
SCOPED = {"exam_id", "room_id", "candidate_id"}
# Path parameters naming a resource inside that scope. Those in REAL are filled with
# another exam's (or room's) real resource; the others get a random id.
OPAQUE = {
    "index",
    "hold_id",
    "export_id",
    "upload_id",
    "incident_id",
    "username",
    "session_id",  # real media sessions: tests/api/test_idor_media.py
    "review_id",
    "nonce",
    "segment",
    "release_id",
    "version",
    "request_id",
    "kind",  # a consent's kind (policy, biometric, ...): the caller's own consent
}
REAL = {"hold_id", "export_id", "upload_id", "incident_id", "nonce", "request_id"}
NUMERIC = {"index", "segment"}

# -- body fields and query parameters --------------------------------------------------
# Each is named by (schema, field) or ("query", parameter). Those that point at an
# existing resource of some exam, room or candidate are swept with another's real one:
BODY_IDS: dict[tuple[str, str], str] = {
    ("MessageIn", "to"): "candidate_id",
    ("IncidentIn", "candidate"): "candidate_id",
    ("HoldCreate", "candidate"): "candidate_id",
    ("ExportCreate", "candidate"): "candidate_id",
    ("LogSearch", "exam"): "exam_id",
    ("query", "to"): "candidate_id",  # talk-back to one candidate
}
# The id of the resource a POST creates: another's taken id must be refused, not reused.
NEW_IDS: dict[tuple[str, str], str] = {
    ("ExamCreate", "id"): "exam_id",
    ("StaffCreate", "username"): "username",
}
# Ids that name no resource of an exam the caller could be refused.
UNSCOPED = {
    ("Login", "exam_no"),  # the credentials of a login, not a resource
    ("Login", "candidate_no"),
    ("StaffLogin", "username"),
    ("LogSearch", "device"),  # a client's pseudonyms: the search is bounded by `exam`
    ("LogSearch", "device_id"),
    ("LogSearch", "session"),
    ("LogSearch", "session_id"),
    ("UpdateCheck", "device_id"),  # the asking device's own id
    ("query", "after"),  # a cursor in the caller's own room's journal (or the overview's)
    ("query", "room"),  # a room looked up inside the exam of the path, already in scope
    ("GuardianLinkIn", "token"),  # a one-time secret handed to a guardian, not an id
    ("GuardianConsentByLinkIn", "token"),
    ("RubricCriterion", "id"),  # the name of a criterion of the rubric being written
}
# Fields and parameters that are values, not ids (the release coordinates platform,
# channel and version name fleet-wide releases any organiser manages, by design).
PLAIN = {
    "title", "starts_at", "ends_at", "region", "room_capacity", "retention", "data_class",
    "trigger", "after_seconds", "fixed_date", "policy_version", "min_age_without_guardian",
    "face_attempts", "candidate_enrolment", "keep_enrolment_photo",
    "require_face_verification", "reference", "reason", "frames", "decision", "note",
    "since", "until", "limit", "network", "allow", "text", "type", "severity", "evidence",
    "password", "role", "platform", "channel", "version", "min_supported", "notes",
    "installer", "filename", "size", "sha256", "gate", "margin", "min_sessions", "sources",
    "leaving", "start", "end", "app_version", "day", "minutes", "extra_minutes",
    "offset", "status", "answer", "accept", "kind", "field", "changes", "effective_at",
    "zh-CN", "en", "zh", "scores", "comment", "criteria", "label", "max_points",
}  # fmt: skip
# A valid body of each schema sent to a route with a path id, less its id fields (the
# caller's own ones are filled in), so that a refusal is never just a 422.
NOW = datetime.now(UTC)
SAMPLES: dict[str, dict[str, Any]] = {
    "GuardianConsentIn": {"reference": "GUARDIAN-1"},
    "ExtendIn": {"minutes": 5},
    "AccommodationIn": {"extra_minutes": 10},
    "LivenessIn": {"frames": []},
    "DecisionIn": {"decision": "accept"},
    "HoldCreate": {"reference": "CASE-1", "reason": "an appeal"},
    "ExportCreate": {"reference": "CASE-1", "reason": "an appeal"},
    "MessageIn": {"text": "five minutes left"},
    "IncidentIn": {"type": "second_person", "severity": "low"},
    "ReviewIn": {"decision": "dismissed"},
    "LogSearch": {
        "device_id": "device-0001",
        "since": (NOW - timedelta(days=1)).isoformat(),
        "until": (NOW + timedelta(hours=1)).isoformat(),
    },
    "ExamCreate": {
        "title": "Physics",
        "starts_at": NOW.isoformat(),
        "ends_at": (NOW + timedelta(hours=1)).isoformat(),
        "region": "cn-north",
    },
    "StaffCreate": {"password": "not the owner's password", "role": "proctor"},
    "RubricIn": {
        "criteria": [{"id": "pitch", "label": {"zh": "音准", "en": "Pitch"}, "max_points": 10}]
    },
    "ReviewDecisionIn": {"decision": "cleared"},
    "ScoresIn": {"scores": {"pitch": 1}},
    "PolicyVersionIn": {
        "version": "2",
        "effective_at": NOW.isoformat(),
        "text": {"zh-CN": "政策", "en": "Policy"},
        "changes": {"zh-CN": "变更", "en": "Changes"},
    },
    "RightsAnswerIn": {"status": "accepted", "answer": "done"},
    "ExamEdit": {"title": "Physics, moved"},
}


Route = tuple[str, str, dict[str, Any]]  # method, path, OpenAPI operation


def _operations(app: FastAPI) -> list[Route]:
    """Every (method, path) of the public API, from the app's own OpenAPI document."""
    return [
        (method.upper(), path, operation)
        for path, operations in app.openapi()["paths"].items()
        for method, operation in sorted(operations.items())
        if method.upper() not in ("HEAD", "OPTIONS")
    ]


def _routes(app: FastAPI) -> list[tuple[str, str, set[str]]]:
    found = []
    for method, path, _ in _operations(app):
        params = set(re.findall(r"{(\w+)}", path))
        if params:
            found.append((method, path, params))
    return found


def _body_schema(operation: dict[str, Any]) -> str | None:
    content = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if content is None:
        return None
    ref: str = content["schema"]["$ref"]
    return ref.rsplit("/", 1)[1]


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"].rsplit("/", 1)[1]] if "$ref" in node else []
        return own + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def _fields(schemas: dict[str, Any], name: str) -> set[tuple[str, str]]:
    """(schema, field) of a body schema and of every schema nested in it."""
    found: set[tuple[str, str]] = set()
    todo, seen = [name], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for field, spec in schemas[current].get("properties", {}).items():
            found.add((current, field))
            todo += _refs(spec)
    return found


def _inputs(app: FastAPI, operation: dict[str, Any]) -> set[tuple[str, str]]:
    """The body fields and query parameters of one operation."""
    schemas = app.openapi()["components"]["schemas"]
    query = {("query", p["name"]) for p in operation.get("parameters", []) if p["in"] == "query"}
    schema = _body_schema(operation)
    return query | (_fields(schemas, schema) if schema else set())


def _fill(path: str, values: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in values:
            return values[name]
        return str(secrets.randbelow(1000)) if name in NUMERIC else secrets.token_hex(6)

    return re.sub(r"{(\w+)(?::\w+)?}", value, path)


def _body(operation: dict[str, Any], own: dict[str, str]) -> dict[str, Any]:
    """A valid body for the operation, its id fields the caller's own; {} if it takes none."""
    schema = _body_schema(operation)
    if schema is None:
        return {}
    assert schema in SAMPLES, f"teach this test a valid {schema} body"
    body = dict(SAMPLES[schema])
    for (owner, field), kind in BODY_IDS.items():
        if owner == schema:
            body[field] = own[kind]
    return body


def test_every_body_field_and_query_parameter_is_known(app: FastAPI) -> None:
    known = set(BODY_IDS) | set(NEW_IDS) | UNSCOPED
    unknown = {
        f"{method} {path}: {owner}.{field}"
        for method, path, operation in _operations(app)
        for owner, field in _inputs(app, operation)
        if (owner, field) not in known and field not in PLAIN
    }
    assert unknown == set(), f"teach this test what these fields hold: {sorted(unknown)}"


# -- the other exam's real resources ----------------------------------------------------


async def _theirs(client: httpx.AsyncClient, other: ExamWorld) -> dict[str, str]:
    """A hold, an export, an upload, an incident and an open liveness challenge of `other`."""
    base = f"/v1/exams/{other.exam_id}"
    case = {"reference": "CASE-9", "reason": "their appeal"}
    hold = await client.post(f"{base}/holds", json=case, headers=other.organiser)
    assert hold.status_code == 201, hold.text
    export = await client.post(f"{base}/exports", json=case, headers=other.organiser)
    assert export.status_code == 201, export.text
    candidate = await joined_candidate(client, other.exam_id, "9001")
    biometric = await client.post(
        "/v1/me/consents/biometric", json={"allow": True}, headers=candidate
    )
    assert biometric.is_success, biometric.text
    upload = await client.post(
        "/v1/uploads/photos", content=image_bytes(seed=9), headers=image_headers(candidate)
    )
    assert upload.status_code == 201, upload.text
    incident = await client.post(
        f"{base}/rooms/r9/incidents",
        json={"candidate": other.candidate_ids["9001"], "type": "second_person"},
        headers=other.proctors["r9"],
    )
    assert incident.status_code == 201, incident.text
    challenge = await client.post("/v1/me/liveness/challenges", headers=candidate)
    assert challenge.status_code == 201, challenge.text
    correction = {"kind": "correction", "field": "name", "text": "my name is misspelt"}
    request = await client.post("/v1/me/requests", json=correction, headers=candidate)
    assert request.status_code == 201, request.text
    return {
        "hold_id": hold.json()["id"],
        "export_id": export.json()["id"],
        "upload_id": upload.json()["id"],
        "incident_id": incident.json()["event_id"],
        "nonce": challenge.json()["nonce"],
        "request_id": request.json()["id"],
    }


async def _next_door(client: httpx.AsyncClient, mine: ExamWorld) -> dict[str, str]:
    """An upload and an incident of room r2 of the caller's own exam."""
    neighbour = await joined_candidate(client, mine.exam_id, "1002")
    upload = await client.post(
        "/v1/uploads/photos", content=image_bytes(seed=2), headers=image_headers(neighbour)
    )
    assert upload.status_code == 201, upload.text
    incident = await client.post(
        f"/v1/exams/{mine.exam_id}/rooms/r2/incidents",
        json={"candidate": mine.candidate_ids["1002"], "type": "second_person"},
        headers=mine.proctors["r2"],
    )
    assert incident.status_code == 201, incident.text
    return {"upload_id": upload.json()["id"], "incident_id": incident.json()["event_id"]}


async def _state(runtime: Runtime, worlds: list[ExamWorld]) -> dict[str, Any]:
    """What a request let through could change: rooms' journals, holds, exports, uploads,
    open liveness challenges, face records."""
    state: dict[str, Any] = {}
    for world in worlds:
        exam = world.exam_id
        for room in world.rooms:
            view = await runtime.rooms.room_view(keys.room_key(exam, room))
            state[f"{exam}/{room}"] = (view["event_count"], view["last_event_id"])
            state[f"{exam}/{room}/uploads"] = [
                u["id"] for u in await runtime.privacy.room_uploads(exam, room)
            ]
        state[f"{exam}/holds"] = sorted(h.id for h in await runtime.privacy.holds.all(exam))
        state[f"{exam}/exports"] = sorted(await runtime.redis.hkeys(keys.privacy_exports_key(exam)))
        for cid in world.candidate_ids.values():
            challenge = await runtime.redis.get(keys.face_challenge_key(exam, cid))
            face = await runtime.redis.hgetall(keys.face_record_key(exam, cid))
            state[f"{exam}/{cid}/face"] = (challenge, sorted(face.items()))
    return state


def _refused(response: httpx.Response) -> bool:
    return response.status_code in (403, 404)


def _why(response: httpx.Response) -> str:
    return f"{response.status_code} {response.text[:300]}"


# -- ids in paths ------------------------------------------------------------------------


async def test_every_id_route_refuses_other_exams_and_rooms(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    mine: ExamWorld = await new_exam(client, runtime, {"r1": ["1001"], "r2": ["1002"]})
    other: ExamWorld = await new_exam(client, runtime, {"r9": ["9001"]})
    me = await candidate_login(client, mine.exam_id, "1001")
    callers = {"organiser": mine.organiser, "proctor": mine.proctors["r1"], "candidate": me}
    their_resources = await _theirs(client, other)
    next_door_resources = await _next_door(client, mine)
    own_scope = {
        "exam_id": mine.exam_id,
        "room_id": "r1",
        "candidate_id": mine.candidate_ids["1001"],
    }
    theirs = {
        "exam_id": other.exam_id,
        "room_id": "r9",
        "candidate_id": other.candidate_ids["9001"],
        **their_resources,
    }
    # Same exam, but a room the proctor does not have, and a candidate of that other room.
    next_door = {
        "exam_id": mine.exam_id,
        "room_id": "r2",
        "candidate_id": mine.candidate_ids["1002"],
        **next_door_resources,
    }
    # The caller's own exam and room with a candidate of another exam.
    stranger = {**own_scope, "candidate_id": other.candidate_ids["9001"]}
    # The caller's own exam, room and candidate, with another exam's hold, export, upload,
    # incident or challenge; and with the uploads and incidents of the next room.
    their_resource = {**own_scope, **their_resources}
    next_door_resource = {**own_scope, **next_door_resources}

    routes = _routes(app)
    unknown = {p for _, _, params in routes for p in params} - SCOPED - OPAQUE
    assert unknown == set(), f"teach this test what these path parameters hold: {unknown}"
    assert len(routes) >= 10
    operations = {(method, path): operation for method, path, operation in _operations(app)}
    # The same callers do reach their own resources: the refusals below are about ids.
    own = f"/v1/exams/{mine.exam_id}/rooms/r1"
    assert (await client.get(own, headers=callers["proctor"])).status_code == 200
    assert (await client.get(own, headers=callers["organiser"])).status_code == 200
    before = await _state(runtime, [mine, other])
    failures = []
    checked = 0
    for method, path, params in routes:
        cases: list[tuple[str, dict[str, str], dict[str, httpx.Headers]]] = []
        if params & SCOPED:
            cases.append(("other exam", theirs, callers))
        if "room_id" in params:
            cases.append(
                ("room not assigned", next_door, {"proctor": callers["proctor"], "candidate": me})
            )
        if "candidate_id" in params:
            cases.append(("candidate of another exam", stranger, callers))
        if params & REAL:
            cases.append(("another exam's resource in my scope", their_resource, callers))
        if params & set(next_door_resources):
            cases.append(("the next room's resource in my room", next_door_resource, callers))
        body = _body(operations[(method, path)], own_scope)
        for label, values, who in cases:
            url = _fill(path, values)
            for role, headers in who.items():
                response = await client.request(method, url, headers=headers, json=body)
                checked += 1
                if not _refused(response):
                    failures.append(f"{method} {path} [{label}] as {role}: {_why(response)}")
    after = await _state(runtime, [mine, other])
    print(f"{checked} requests over {len(routes)} routes, {len(failures)} not refused")
    assert failures == [], "\n".join(failures)
    assert after == before
    # Their resources are still theirs, and still work.
    base = f"/v1/exams/{other.exam_id}"
    held = await client.get(f"{base}/holds", headers=other.organiser)
    assert [h["id"] for h in held.json()["holds"]] == [their_resources["hold_id"]]
    export = f"{base}/exports/{their_resources['export_id']}"
    assert (await client.get(export, headers=other.organiser)).status_code == 200
    upload = f"{base}/rooms/r9/uploads/{their_resources['upload_id']}"
    assert (await client.get(upload, headers=other.proctors["r9"])).status_code == 200
    view = await runtime.rooms.room_view(keys.room_key(other.exam_id, "r9"))
    assert view["incidents"][their_resources["incident_id"]]["status"] == "open"


# -- ids in bodies and query strings -----------------------------------------------------


async def test_ids_in_bodies_and_queries_refuse_other_exams_and_rooms(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    mine: ExamWorld = await new_exam(client, runtime, {"r1": ["1001"], "r2": ["1002"]})
    other: ExamWorld = await new_exam(client, runtime, {"r9": ["9001"]})
    me = await candidate_login(client, mine.exam_id, "1001")
    callers = {"organiser": mine.organiser, "proctor": mine.proctors["r1"], "candidate": me}
    own = {"exam_id": mine.exam_id, "room_id": "r1", "candidate_id": mine.candidate_ids["1001"]}
    foreign = [
        ("other exam", {"exam_id": other.exam_id, "candidate_id": other.candidate_ids["9001"]}),
        ("the next room", {"candidate_id": mine.candidate_ids["1002"]}),  # room routes only
    ]

    swept: list[tuple[str, str, dict[str, Any], dict[tuple[str, str], str]]] = []
    for method, path, operation in _operations(app):
        ids = {f: kind for f, kind in BODY_IDS.items() if f in _inputs(app, operation)}
        if ids:
            swept.append((method, path, operation, ids))
    assert {f for *_, ids in swept for f in ids} == set(BODY_IDS), "a known id field is gone"

    def request(
        path: str,
        operation: dict[str, Any],
        ids: dict[tuple[str, str], str],
        values: dict[str, str],
    ) -> tuple[str, dict[str, Any]]:
        body = _body(operation, own)
        query = {}
        for (owner, field), kind in ids.items():
            if owner == "query":
                query[field] = values[kind]
            else:
                body[field] = values[kind]
        url = _fill(path, own)
        return str(httpx.URL(url, params=query)), body

    # Each id field is first sent with the caller's own id: whoever gets through with it is
    # who must be refused the same request with another's.
    allowed: dict[tuple[str, str], dict[str, httpx.Headers]] = {}
    for method, path, operation, ids in swept:
        url, body = request(path, operation, ids, own)
        for role, headers in callers.items():
            response = await client.request(method, url, headers=headers, json=body)
            json_body = _body_schema(operation) is not None
            refused = response.status_code in (401, 403, 404, 422)
            through = response.is_success if json_body else not refused
            if through:
                allowed.setdefault((method, path), {})[role] = headers
        assert allowed.get((method, path)), f"nobody gets through {method} {path} with own ids"

    before = await _state(runtime, [mine, other])
    failures = []
    checked = 0
    for method, path, operation, ids in swept:
        for label, theirs in foreign:
            if not set(ids.values()) <= set(theirs):
                continue
            if label == "the next room" and "{room_id}" not in path:
                continue  # exam-wide routes may name any candidate of the exam
            url, body = request(path, operation, ids, {**own, **theirs})
            for role, headers in allowed[(method, path)].items():
                response = await client.request(method, url, headers=headers, json=body)
                checked += 1
                if not _refused(response):
                    failures.append(f"{method} {url} {body} [{label}] as {role}: {_why(response)}")
    after = await _state(runtime, [mine, other])
    print(f"{checked} requests over {len(swept)} routes, {len(failures)} not refused")
    assert failures == [], "\n".join(failures)
    assert after == before
    assert checked >= len(swept)


async def test_creating_with_another_exams_taken_id_changes_nothing(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    mine: ExamWorld = await new_exam(client, runtime, {"r1": ["1001"]})
    other: ExamWorld = await new_exam(client, runtime, {"r9": ["9001"]})
    proctor = (await client.get("/v1/staff/me", headers=other.proctors["r9"])).json()
    taken = {"exam_id": other.exam_id, "username": proctor["username"]}

    async def theirs() -> tuple[Any, ...]:
        exam = await client.get(f"/v1/exams/{other.exam_id}", headers=other.organiser)
        assert exam.status_code == 200, exam.text
        relogin = await staff_login(client, proctor["username"])  # the old password still
        me = (await client.get("/v1/staff/me", headers=relogin)).json()
        mine_now = (await client.get("/v1/staff/me", headers=mine.organiser)).json()
        return exam.json(), me, mine_now["exams"]

    before = await theirs()
    creates = [
        (method, path, operation)
        for method, path, operation in _operations(app)
        if any(f in NEW_IDS for f in _inputs(app, operation))
    ]
    assert len(creates) == len({owner for owner, _ in NEW_IDS})
    failures = []
    for method, path, operation in creates:
        schema = _body_schema(operation)
        assert schema is not None
        body = dict(SAMPLES[schema])
        for (owner, field), kind in NEW_IDS.items():
            if owner == schema:
                body[field] = taken[kind]
        response = await client.request(method, path, json=body, headers=mine.organiser)
        if response.status_code not in (403, 404, 409):
            failures.append(f"{method} {path} {body}: {_why(response)}")
    assert failures == [], "\n".join(failures)
    assert await theirs() == before
