from __future__ import annotations

import httpx
from fastapi import FastAPI

from core import keys
from tests.accounts.test_login import runtime_of
from tests.support.factories import new_exam, roster_csv


async def _import(
    client: httpx.AsyncClient, exam_id: str, body: str | bytes, headers: httpx.Headers
) -> httpx.Response:
    return await client.post(
        f"/v1/exams/{exam_id}/roster", content=body, headers={**headers, "content-type": "text/csv"}
    )


async def test_reimport_is_idempotent_and_identity_is_encrypted(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(
        client, runtime, {"r1": ["1001", "1002"], "r2": ["1003"]}, with_proctors=False
    )
    again = await _import(
        client, world.exam_id, roster_csv(world.exam_id, world.rooms), world.organiser
    )
    assert again.status_code == 200
    assert again.json() == {
        "rows": 3,
        "created": 0,
        "updated": 0,
        "unchanged": 3,
        "rooms": {"r1": 2, "r2": 1},
    }
    moved = await _import(
        client,
        world.exam_id,
        roster_csv(world.exam_id, {"r1": ["1001"], "r2": ["1002", "1003"]}),
        world.organiser,
    )
    assert moved.json()["updated"] == 1
    assert moved.json()["rooms"] == {"r1": 1, "r2": 2}
    raw = await runtime.redis.hgetall(
        keys.candidate_key(world.exam_id, world.candidate_ids["1001"])
    )
    stored = b"".join(v for v in raw.values() if isinstance(v, bytes))
    assert b"Candidate 1001" not in stored
    assert b"2000-01-01" not in stored
    assert b"1001" not in stored


async def test_bad_rows_are_reported_by_line_and_column_and_nothing_is_stored(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["1001"]}, with_proctors=False)
    exam = world.exam_id
    body = "\n".join(
        [
            "exam_no,candidate_no,name,date_of_birth,room,guardian_consent",
            f"{exam},2001,Good Row,2001-02-03,r1,",
            f"{exam},2002,Bad Date,2001-02-30,r1,",
            "otherexam,2003,Other Exam,2001-02-03,r1,",
            f"{exam},2001,Duplicate,2001-02-03,r1,",
            f"{exam},20 04,Bad Number,2001-02-03,r1,",
            f"{exam},2005,Short Row",
            f'{exam},2006,"Unclosed,2001-02-03,r1,',
        ]
    )
    response = await _import(client, exam, body, world.organiser)
    assert response.status_code == 422
    problem = response.json()
    assert problem["reason"] == "roster_invalid"
    found = {(e["line"], e["column"], e["reason"]) for e in problem["errors"]}
    assert found == {
        (3, "date_of_birth", "invalid_date"),
        (4, "exam_no", "other_exam"),
        (5, "candidate_no", "duplicate_of_line_2"),
        (6, "candidate_no", "invalid_candidate_no"),
        (7, "*", "wrong_column_count"),
        (8, "*", "unbalanced_quotes"),
    }
    good = runtime.exams.candidate_id(exam, "2001")
    assert await runtime.exams.candidate(exam, good) is None


async def test_room_capacity_is_enforced(client: httpx.AsyncClient, app: FastAPI) -> None:
    world = await new_exam(
        client, runtime_of(app), {"r1": ["1"]}, with_proctors=False, room_capacity=2
    )
    response = await _import(
        client, world.exam_id, roster_csv(world.exam_id, {"r1": ["1", "2", "3"]}), world.organiser
    )
    assert response.status_code == 422
    assert {e["reason"] for e in response.json()["errors"]} == {"room_full"}


async def test_roster_refuses_wrong_type_bad_header_and_oversize(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["1"]}, with_proctors=False)
    url = f"/v1/exams/{world.exam_id}/roster"
    as_json = await client.post(url, json={"rows": []}, headers=world.organiser)
    assert as_json.status_code == 415
    assert as_json.json()["reason"] == "csv_required"
    header = await _import(client, world.exam_id, "exam,candidate\n", world.organiser)
    assert header.json()["errors"][0]["reason"] == "bad_header"
    assert (await _import(client, world.exam_id, b"\xff\xfe\x00bad", world.organiser)).json()[
        "errors"
    ][0]["reason"] == "not_utf8"
    limit = runtime.settings.max_upload_bytes
    huge = await _import(client, world.exam_id, b"x" * (limit + 1), world.organiser)
    assert huge.status_code == 413


async def test_unknown_region_and_bad_exam_are_refused(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["1"]}, with_proctors=False)
    base = {
        "id": "regionless",
        "title": "t",
        "starts_at": "2026-12-01T08:00:00Z",
        "ends_at": "2026-12-01T10:00:00Z",
    }
    unknown = await client.post(
        "/v1/exams", json={**base, "region": "mars-1"}, headers=world.organiser
    )
    assert unknown.status_code == 422
    assert unknown.json()["reason"] == "unknown_region"
    backwards = await client.post(
        "/v1/exams",
        json={**base, "region": "cn-north", "ends_at": "2026-12-01T07:00:00Z"},
        headers=world.organiser,
    )
    assert backwards.status_code == 422
    negative = await client.post(
        "/v1/exams",
        json={
            **base,
            "region": "cn-north",
            "retention": [{"data_class": "logs", "trigger": "exam_end", "after_seconds": -1}],
        },
        headers=world.organiser,
    )
    assert negative.status_code == 422
    duplicate = await client.post(
        "/v1/exams",
        json={**base, "id": world.exam_id, "region": "cn-north"},
        headers=world.organiser,
    )
    assert duplicate.status_code == 409
