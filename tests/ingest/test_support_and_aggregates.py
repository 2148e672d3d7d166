"""A candidate's token ties logs to the exam; staff query them; live aggregates count sessions."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import httpx
from fastapi import FastAPI

from tests.ingest.helpers import ndjson, new_device, record, runtime_of
from tests.support.factories import candidate_login, new_exam

NDJSON = {"content-type": "application/x-ndjson"}


def _window() -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "since": (now - timedelta(hours=1)).isoformat(),
        "until": (now + timedelta(hours=1)).isoformat(),
    }


async def test_exam_bound_logs_are_scrubbed_and_found_by_support(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    number = f"QX{secrets.token_hex(3)}"
    world = await new_exam(client, runtime, {"r1": [number]})
    other = await new_exam(client, runtime, {"r1": ["5501"]})
    token = await candidate_login(client, world.exam_id, number)
    device = new_device()
    raw_token = token["authorization"][7:]
    message = (
        f"Candidate {number} (exam {world.exam_id}) on {device}: call +86 138 0013 8000, "
        f"mail zhang.wei@example.com, token={raw_token}"
    )
    batch = [record(device, message=message, session="s-1", kind="crash")]
    response = await client.post("/v1/logs", content=ndjson(batch), headers={**NDJSON, **token})
    assert response.status_code == 202, response.text
    pseudonym = response.json()["device"]
    assert pseudonym != device
    await runtime.ingest.drain()

    query = {"device_id": device, "exam": world.exam_id, **_window()}
    found = await client.post("/v1/logs/search", json=query, headers=world.proctors["r1"])
    assert found.status_code == 200, found.text
    records = found.json()["records"]
    assert len(records) == 1
    stored = records[0]
    assert stored["device"] == pseudonym
    for secret in (number, world.exam_id, device, raw_token, "zhang.wei@example.com", "0013 8000"):
        assert secret not in stored["message"]
    by_session = await client.post(
        "/v1/logs/search",
        json={"session": stored["session"], "exam": world.exam_id, **_window()},
        headers=world.organiser,
    )
    assert [r["id"] for r in by_session.json()["records"]] == [stored["id"]]
    # Staff of another exam do not even learn that the exam exists.
    refused = await client.post("/v1/logs/search", json=query, headers=other.proctors["r1"])
    assert refused.status_code == 404
    # Logs sent without a token are for organisers only.
    anonymous = {"device": pseudonym, **_window()}
    proctor = await client.post("/v1/logs/search", json=anonymous, headers=world.proctors["r1"])
    assert proctor.json()["reason"] == "organisers_only"
    organiser = await client.post("/v1/logs/search", json=anonymous, headers=world.organiser)
    assert organiser.json()["records"] == []  # this device sent nothing anonymously
    # Candidates cannot search at all.
    assert (await client.post("/v1/logs/search", json=query, headers=token)).status_code == 403


async def test_crash_free_sessions_and_usage_without_identity(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["5601"]})
    version = f"6.{secrets.randbelow(10**6)}.0"
    device = new_device()
    batch = []
    for session in range(4):
        batch += [record(device, session=f"s{session}", app_version=version) for _ in range(3)]
    batch.append(record(device, session="s3", kind="crash", app_version=version))
    batch.append(record(device, session="s3", kind="crash", app_version=version, message="again"))
    batch.append(
        record(
            device,
            kind="metric",
            name="exam.submitted",
            value=2.5,
            app_version=version,
            session="s0",
        )
    )
    response = await client.post("/v1/logs", content=ndjson(batch), headers=NDJSON)
    assert response.status_code == 202, response.text

    stats = await client.get(
        "/v1/logs/crash-stats",
        params={"platform": "android", "app_version": version},
        headers=world.organiser,
    )
    rows = {row["model"]: row for row in stats.json()["dimensions"]}
    assert set(rows) == {"Pixel 7", "*"}
    for row in rows.values():
        assert (row["sessions"], row["crashed_sessions"], row["crashes"]) == (4, 1, 2)
        assert row["crash_free_sessions"] == 0.75

    day = datetime.now(UTC).strftime("%Y-%m-%d")
    usage = await client.get("/v1/logs/usage", params={"day": day}, headers=world.proctors["r1"])
    metrics = [m for m in usage.json()["metrics"] if m["app_version"] == version]
    assert metrics == [
        {
            "name": "exam.submitted",
            "platform": "android",
            "app_version": version,
            "count": 1,
            "sum": 2.5,
        }
    ]
    anonymous = await client.get("/v1/logs/crash-stats")
    assert anonymous.status_code == 401
