"""10,000 records through the gateway and the ingest actors, flushed to the regional stores."""

from __future__ import annotations

import gzip
import json
import secrets
from typing import Any

import httpx
from fastapi import FastAPI

from core import aggregates
from tests.ingest.helpers import (
    StoredObject,
    anonymous_prefix,
    hour_of,
    ndjson,
    new_device,
    read_objects,
    record,
    runtime_of,
)
from tests.support.factories import consenting_candidate, new_exam

DEVICES = 10
BATCHES = 4
PER_BATCH = 250


def _body(records: list[dict[str, Any]], form: int) -> tuple[bytes, dict[str, str]]:
    """Four ways a client may send: NDJSON, gzip NDJSON, a JSON array, a gzip JSON array."""
    if form in (0, 1):
        body, media = ndjson(records), "application/x-ndjson"
    else:
        body, media = json.dumps(records).encode(), "application/json"
    headers = {"content-type": media}
    if form in (1, 3):
        body = gzip.compress(body)
        headers["content-encoding"] = "gzip"
    return body, headers


async def test_ten_thousand_records_land_once_each_in_their_partitions(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    numbers = [f"QX{secrets.token_hex(3)}" for _ in range(DEVICES // 2)]
    world = await new_exam(client, runtime, {"r1": numbers}, region="cn-east", with_proctors=False)
    tokens = [await consenting_candidate(client, world.exam_id, n) for n in numbers]
    tag = secrets.token_hex(5)
    version = f"5.{secrets.randbelow(10**5)}.0"
    devices = [new_device() for _ in range(DEVICES)]
    crashes = 0
    for d, device in enumerate(devices):
        bound = d < DEVICES // 2  # half with a candidate's token, half anonymous
        headers = dict(tokens[d]) if bound else {}
        secret_words = f"{tokens[d]['authorization'][7:]} {numbers[d]}" if bound else ""
        for b in range(BATCHES):
            batch = []
            for i in range(PER_BATCH):
                kind = "crash" if i % 25 == 0 else "metric" if i % 10 == 1 else "log"
                crashes += kind == "crash" and bound  # anonymous batches count nowhere
                batch.append(
                    record(
                        device,
                        rid=f"{tag}-{d}-{b}-{i}",
                        kind=kind,
                        message=f"device {device} user mail a.b@example.com {secret_words}",
                        session=f"s-{d}-{b}",
                        app_version=version,
                        breadcrumbs=[{"category": "nav", "message": f"id={device}"}],
                    )
                )
            body, extra = _body(batch, b)
            response = await client.post("/v1/logs", content=body, headers={**headers, **extra})
            assert response.status_code == 202, response.text
            assert response.json()["accepted"] == PER_BATCH

    drained = await runtime.ingest.drain(timeout_s=60)
    assert all(shard["drained"] for shard in drained), drained

    exam_objects = await read_objects(runtime, "cn-east", f"{world.exam_id}/logs/")
    anonymous = await read_objects(runtime, "cn-north", anonymous_prefix())
    ours = [o for o in anonymous if any(line["id"].startswith(tag) for line in o.lines)]
    ids = [
        line["id"] for o in exam_objects + ours for line in o.lines if line["id"].startswith(tag)
    ]
    assert len(ids) == DEVICES * BATCHES * PER_BATCH
    assert len(set(ids)) == len(ids)

    for obj in exam_objects + ours:
        _check_partition(obj)
        _check_scrubbed(obj, devices, [t["authorization"][7:] for t in tokens], numbers)
        assert world.candidate_ids[numbers[0]].encode() not in gzip.decompress(obj.raw)
    bound_ids = {line["id"].split("-")[1] for o in exam_objects for line in o.lines}
    assert bound_ids == {str(d) for d in range(DEVICES // 2)}
    anonymous_ids = {
        line["id"].split("-")[1] for o in ours for line in o.lines if line["id"].startswith(tag)
    }
    assert anonymous_ids == {str(d) for d in range(DEVICES // 2, DEVICES)}

    stats = await aggregates.crash_stats(runtime.redis, "android", version)
    by_model = {row.model: row for row in stats}
    assert by_model["*"].crashes == crashes
    assert by_model["Pixel 7"].crashes == crashes
    # Sessions are HyperLogLogs: exact enough, not exact (about 0.8% standard error).
    bound_sessions = DEVICES // 2 * BATCHES  # one session per bound batch
    assert abs(by_model["*"].sessions - bound_sessions) <= 1
    assert abs(by_model["*"].crashed_sessions - bound_sessions) <= 1  # each had a crash


def _check_partition(obj: StoredObject) -> None:
    """.../logs/{kind}/{YYYY-MM-DDTHH}-{plan}.ndjson.gz, every line of that kind and hour."""
    *_, kind, name = obj.key.split("/")
    assert name.endswith(".ndjson.gz")
    for line in obj.lines:
        assert line["kind"] == kind
        assert name.startswith(hour_of(line["received"]) + "-")
        if kind == "metric":
            assert "device" not in line
            assert "session" not in line
        else:
            assert line["device"].startswith("d")
        assert "candidate" not in line
        assert "cid" not in line


def _check_scrubbed(
    obj: StoredObject, devices: list[str], tokens: list[str], numbers: list[str]
) -> None:
    clear = gzip.decompress(obj.raw)
    for secret in [*devices, *tokens, *numbers, "a.b@example.com"]:
        assert secret.encode() not in clear, f"{secret} left in {obj.key}"
        assert secret.encode() not in obj.raw
