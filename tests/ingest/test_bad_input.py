"""Bad batches through the HTTP API: a clear 4xx with a reason, and nothing stored."""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx
from fastapi import FastAPI

from api.runtime import Runtime
from core.keys import ingest_rate_key
from infra.settings import Settings
from tests.ingest.helpers import (
    anonymous_prefix,
    ndjson,
    new_device,
    read_objects,
    record,
    runtime_of,
)

NDJSON = {"content-type": "application/x-ndjson"}


def _problem(response: httpx.Response, status: int, reason: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["reason"] == reason
    return body


async def _nothing_stored(runtime: Runtime, device: str) -> None:
    """The append script never ran for the device: no budget spent, no record anywhere."""
    pseudonym = runtime.ingest.pseudonyms.device(device)
    assert await runtime.redis.exists(ingest_rate_key(pseudonym)) == 0


async def test_malformed_lines_are_named_and_nothing_is_stored(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    device = new_device()
    good = ndjson([record(device)]).strip()
    body = b"\n".join([good, b'{"kind": "log", ', good, b"not json at all", good])
    problem = _problem(
        await client.post("/v1/logs", content=body, headers=NDJSON), 400, "malformed_lines"
    )
    assert problem["lines"] == [2, 4]
    array = json.dumps([record(device)])[:-1].encode()  # unterminated array
    _problem(
        await client.post("/v1/logs", content=array, headers={"content-type": "application/json"}),
        400,
        "malformed_lines",
    )
    await _nothing_stored(runtime_of(app), device)


async def test_schema_errors_name_lines_and_fields(client: httpx.AsyncClient, app: FastAPI) -> None:
    device = new_device()
    records = [record(device), record(device, kind="crash", stack=""), record(device, os="amiga")]
    problem = _problem(
        await client.post("/v1/logs", content=ndjson(records), headers=NDJSON),
        422,
        "invalid_records",
    )
    assert problem["lines"] == [2, 3]
    assert {e["field"] for e in problem["errors"] if e["line"] == 3} == {"os"}
    as_array = await client.post("/v1/logs", json=records)
    assert _problem(as_array, 422, "invalid_records")["lines"] == [2, 3]
    mixed = [record(device), record(new_device())]
    _problem(await client.post("/v1/logs", json=mixed), 422, "mixed_devices")
    _problem(await client.post("/v1/logs", json={"kind": "log"}), 422, "batch_not_array")
    _problem(await client.post("/v1/logs", json=[]), 422, "empty_batch")
    await _nothing_stored(runtime_of(app), device)


async def test_size_limits_answer_413(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    device = new_device()
    limits = settings.ingest
    too_many = [record(device, message="x") for _ in range(limits.max_batch_records + 1)]
    _problem(await client.post("/v1/logs", json=too_many), 413, "too_many_records")
    big = record(device, message="y" * (limits.max_record_bytes + 1))
    problem = _problem(
        await client.post("/v1/logs", content=ndjson([record(device), big]), headers=NDJSON),
        413,
        "record_too_large",
    )
    assert problem["lines"] == [2]
    # A gzip bomb: 64 KiB on the wire, far more once inflated; refused at the batch limit.
    bomb = gzip.compress(b"\n" * (limits.max_batch_bytes * 4), 9)
    assert len(bomb) < settings.max_request_bytes
    _problem(
        await client.post("/v1/logs", content=bomb, headers={**NDJSON, "content-encoding": "gzip"}),
        413,
        "decompressed_too_large",
    )
    _problem(
        await client.post(
            "/v1/logs", content=b"\x1f\x8bnot gzip", headers={**NDJSON, "content-encoding": "gzip"}
        ),
        400,
        "bad_gzip",
    )
    over = b"z" * (settings.max_request_bytes + 1)
    _problem(await client.post("/v1/logs", content=over, headers=NDJSON), 413, "payload_too_large")
    await _nothing_stored(runtime_of(app), device)


async def test_unsupported_types_and_bad_tokens(client: httpx.AsyncClient, app: FastAPI) -> None:
    device = new_device()
    body = ndjson([record(device)])
    _problem(
        await client.post("/v1/logs", content=body, headers={"content-type": "text/plain"}),
        415,
        "json_or_ndjson_required",
    )
    _problem(
        await client.post("/v1/logs", content=body, headers={**NDJSON, "content-encoding": "br"}),
        415,
        "unsupported_encoding",
    )
    forged = {**NDJSON, "authorization": "Bearer abc.def"}
    _problem(await client.post("/v1/logs", content=body, headers=forged), 401, "invalid_token")
    await _nothing_stored(runtime_of(app), device)


async def test_device_rate_limit_answers_429_with_retry_after(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    device = new_device()
    per_batch = settings.ingest.max_batch_records
    budget = settings.ingest.device_records_per_window
    for start in range(0, budget, per_batch):
        batch = [
            record(device, message=f"m{start + i}") for i in range(min(per_batch, budget - start))
        ]
        accepted = await client.post("/v1/logs", content=ndjson(batch), headers=NDJSON)
        assert accepted.status_code == 202, accepted.text
    refused = await client.post(
        "/v1/logs", content=ndjson([record(device, message="one more")]), headers=NDJSON
    )
    _problem(refused, 429, "device_rate_limited")
    assert 0 < int(refused.headers["retry-after"]) <= settings.ingest.device_window_seconds
    # Another device is not affected.
    other = await client.post("/v1/logs", content=ndjson([record(new_device())]), headers=NDJSON)
    assert other.status_code == 202


async def test_a_resent_batch_is_acknowledged_but_stored_once(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    device = new_device()
    batch = ndjson([record(device, rid=f"resend-{device}-{i}") for i in range(20)])
    first = await client.post("/v1/logs", content=batch, headers=NDJSON)
    again = await client.post("/v1/logs", content=batch, headers=NDJSON)
    assert (first.json()["accepted"], first.json()["duplicates"]) == (20, 0)
    assert (again.json()["accepted"], again.json()["duplicates"]) == (0, 20)
    # Half old, half new: the new half is stored, the old half acknowledged.
    overlap = ndjson([record(device, rid=f"resend-{device}-{i}") for i in range(10, 30)])
    mixed = (await client.post("/v1/logs", content=overlap, headers=NDJSON)).json()
    assert (mixed["accepted"], mixed["duplicates"]) == (10, 10)
    # Without ids, the same content gets the same id.
    plain = ndjson([record(device, message="same")])
    await client.post("/v1/logs", content=plain, headers=NDJSON)
    assert (await client.post("/v1/logs", content=plain, headers=NDJSON)).json()["duplicates"] == 1
    runtime = runtime_of(app)
    await runtime.ingest.drain()
    objects = await read_objects(runtime, "cn-north", anonymous_prefix())
    ids = [
        line["id"] for o in objects for line in o.lines if line["id"].startswith("resend-" + device)
    ]
    assert sorted(ids) == sorted(f"resend-{device}-{i}" for i in range(30))
