"""A candidate's token ties logs to the exam; staff query them; live aggregates count sessions."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime, timedelta

import httpx
from fastapi import FastAPI

from actors.ingest.append import Appender, IngestBatch
from core import aggregates, keys
from infra.pseudonym import Pseudonyms
from infra.redis import text
from infra.settings import Settings
from tests.ingest.helpers import ndjson, new_device, record, runtime_of
from tests.support.factories import consenting_candidate, new_exam

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
    token = await consenting_candidate(client, world.exam_id, number)
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
    token = await consenting_candidate(client, world.exam_id, "5601")  # only bound batches count
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
    response = await client.post("/v1/logs", content=ndjson(batch), headers={**NDJSON, **token})
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


async def test_anonymous_crashes_are_stored_but_do_not_move_the_crash_gate(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["5701"]}, with_proctors=False)
    version = f"7.{secrets.randbelow(10**6)}.0"
    device = new_device()
    batch = []
    for session in range(20):  # made-up sessions, every one crashing
        batch.append(record(device, session=f"fake-{session}", app_version=version))
        batch.append(record(device, session=f"fake-{session}", kind="crash", app_version=version))
    batch.append(record(device, kind="metric", name="made.up", app_version=version))
    response = await client.post("/v1/logs", content=ndjson(batch), headers=NDJSON)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == len(batch)

    health = await aggregates.version_health(runtime.redis, "android", version)
    assert (health.sessions, health.crashed_sessions, health.crashes) == (0, 0, 0)
    assert await aggregates.crash_stats(runtime.redis, "android", version) == []
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    usage = await aggregates.usage(runtime.redis, day)
    assert [m for m in usage if m["app_version"] == version] == []
    assert not await runtime.redis.sismember(keys.INGEST_DIMS, keys.dim("android", version))

    # The records themselves are kept, for organisers to search.
    await runtime.ingest.drain()
    query = {"device_id": device, **_window()}
    found = await client.post("/v1/logs/search", json=query, headers=world.organiser)
    assert len(found.json()["records"]) == len(batch) - 1  # the metric has no device

    # The same kind of batch with a candidate's token does count.
    token = await consenting_candidate(client, world.exam_id, "5701")
    bound = [record(device, session="real", kind="crash", app_version=version, message="x")]
    response = await client.post("/v1/logs", content=ndjson(bound), headers={**NDJSON, **token})
    assert response.status_code == 202, response.text
    health = await aggregates.version_health(runtime.redis, "android", version)
    assert (health.sessions, health.crashed_sessions, health.crashes) == (1, 1, 1)


async def test_a_flood_of_made_up_models_and_versions_stops_at_the_dimension_cap(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["5801"]}, with_proctors=False)
    before = int(await runtime.redis.scard(keys.INGEST_DIMS))
    cap = before + 6
    capped = settings.ingest.model_copy(update={"max_dimensions": cap})
    # A shard of this test's own, with the small cap (the actors keep theirs).
    shard = f"test-{secrets.token_hex(4)}"
    appender = Appender(runtime.redis, capped, Pseudonyms(settings.pseudonym_key), shard)
    version = f"8.{secrets.randbelow(10**6)}.0"
    device = new_device()

    def flood(prefix: str, versions: bool) -> IngestBatch:
        records = [
            record(
                device,
                session=f"{prefix}-{i}",
                kind="crash",
                model=f"Made Up {prefix} {i}",
                app_version=f"9.{secrets.randbelow(10**6)}.{i}" if versions else version,
            )
            for i in range(40)
        ]
        return IngestBatch(ndjson(records), "ndjson", "cn-north", world.exam_id)

    await appender.append(flood("a", versions=False), time.time())
    dims = {text(d) for d in await runtime.redis.smembers(keys.INGEST_DIMS)}
    assert len(dims) == cap
    # The version total came first: the gate's dimension counts every crash of the batch.
    assert keys.dim("android", version) in dims
    health = await aggregates.version_health(runtime.redis, "android", version)
    assert health.crashes == 40
    await appender.append(flood("b", versions=True), time.time())
    await appender.append(flood("c", versions=True), time.time())
    assert await runtime.redis.scard(keys.INGEST_DIMS) == cap
    # A dimension already counted goes on counting.
    again = [record(device, session="a-0", kind="crash", app_version=version, message="2")]
    batch = IngestBatch(ndjson(again), "ndjson", "cn-north", world.exam_id)
    await appender.append(batch, time.time())
    health = await aggregates.version_health(runtime.redis, "android", version)
    assert health.crashes == 41


ADDRESSES = (
    "127.0.0.7",
    "::1",
    "2001:db8::1",
    "2001:0DB8:0000:0000:0000:0000:0000:0042",
    "::ffff:127.0.0.9",
    "fe80::1%eth0",
)


async def test_ip_addresses_in_every_form_are_scrubbed_before_storage(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["5901"]}, with_proctors=False)
    device = new_device()
    message = (
        "connect to 127.0.0.7:8443 failed; retry [2001:db8::1]:443, then ::1, "
        "peer ::ffff:127.0.0.9 via fe80::1%eth0 at 12:30:45"
    )
    crumb = {"category": "net", "message": "dns 2001:0DB8:0000:0000:0000:0000:0000:0042."}
    batch = [
        record(
            device,
            kind="crash",
            message=message,
            stack="SocketException: 127.0.0.7\n  at Net.open(Net.kt:7)",
            breadcrumbs=[crumb],
        )
    ]
    response = await client.post("/v1/logs", content=ndjson(batch), headers=NDJSON)
    assert response.status_code == 202, response.text
    await runtime.ingest.drain()

    query = {"device_id": device, **_window()}
    found = await client.post("/v1/logs/search", json=query, headers=world.organiser)
    (stored,) = found.json()["records"]
    text_of = f"{stored['message']} {stored['stack']} {stored['breadcrumbs']}"
    for address in ADDRESSES:
        assert address not in text_of, text_of
    assert "127.0.0" not in text_of
    assert stored["message"] == (
        "connect to [ip]:8443 failed; retry [ip]:443, then [ip], peer [ip] via [ip] at 12:30:45"
    )
