"""`GET /metrics/cluster` shows the cluster from the actors' own stats, once, and
`GET /metrics` only what the gateway process measures itself; no personal data in the
expositions, the JSON logs or the spans; JSON log lines carry the trace id."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re

import httpx
import pytest
from fastapi import FastAPI

from actors.media.sessions import MediaSession, new_etag, new_session_id
from api.routes.metrics import check_token
from api.runtime import Runtime
from infra.errors import Unauthenticated
from infra.json_logs import json_handler
from infra.settings import Settings
from infra.settings.ops import OpsSettings
from infra.telemetry import tracer
from tests.support.factories import joined_candidate, new_exam

NUMBERS = {"r1": ["4471920", "4471921"], "r2": ["4471922"]}


def runtime_of(app: FastAPI) -> Runtime:
    runtime: Runtime = app.state.runtime
    return runtime


def _value(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith((name + "{", name + " ")):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_metrics_count_candidates_and_hold_nothing_personal(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    logs = io.StringIO()
    handler = json_handler("gateway", logs)
    logging.getLogger().addHandler(handler)
    try:
        runtime = runtime_of(app)
        world = await new_exam(client, runtime, NUMBERS)
        tokens = [
            (await joined_candidate(client, world.exam_id, n))["authorization"]
            for n in ("4471920", "4471921", "4471922")
        ]
        # One candidate of r1 publishes a camera: the WHIP session record the gateway keeps.
        exam = world.exam_id
        cid = world.candidate_ids["4471920"]
        await runtime.media.sessions.save(
            MediaSession(
                id=new_session_id(),
                kind="whip",
                owner=f"candidate:{exam}:{cid}",
                exam=exam,
                room="r1",
                cid=cid,
                source="camera",
                shard="media-shard-0",
                etag=new_etag(),
            )
        )
        logging.getLogger("examday.test").warning("scraping exam %s", world.exam_id)
        for _ in range(30):  # bounded: a verifier pool still starting does not answer yet
            response = await client.get("/metrics/cluster")
            if 'examday_scrape_error{part="verifier"} 0.0' in response.text:
                break
            await asyncio.sleep(2)
        pod = await client.get("/metrics")
    finally:
        logging.getLogger().removeHandler(handler)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert _value(text, "examday_candidates", exam=exam, room="r1", state="joined") == 2
    assert _value(text, "examday_candidates", exam=exam, room="r2", state="joined") == 1
    cameras = "examday_candidate_cameras"
    assert _value(text, cameras, exam=exam, room="r1", state="publishing") == 1
    assert _value(text, cameras, exam=exam, room="r1", state="missing") == 1
    assert _value(text, cameras, exam=exam, room="r2", state="missing") == 1
    shards = await runtime.rooms.directory.members()
    rooms = sum(_value(text, "examday_room_shard_rooms", shard=s) or 0 for s in shards)
    assert rooms >= 2
    for shard in shards:
        assert (_value(text, "examday_room_shard_uptime_seconds", shard=shard) or 0) > 0
    assert _value(text, "examday_verifier_replicas", state="ready") is not None
    assert _value(text, "examday_verifier_queue_limit") == settings.verifier.max_queue
    for region in settings.regions:
        assert _value(text, "examday_region_store_up", region=region) == 1
    # The test stack's Redis keeps an append-only file.
    assert _value(text, "examday_redis_persistence_info", verdict="ok") == 1
    parts = ("rooms", "media", "retention", "controller", "redis", "stores", "verifier", "ingest")
    assert {p: _value(text, "examday_scrape_error", part=p) for p in parts} == dict.fromkeys(
        parts, 0
    )
    # Counters are counters, named `_total`.
    assert "# TYPE examday_room_shard_events_appended_total counter" in text
    assert "# TYPE examday_controller_decisions_total counter" in text
    # The pod's own exposition holds no cluster figure: summed over gateways, they would
    # count every room once per replica.
    assert pod.status_code == 200, pod.text
    assert "examday_" not in pod.text
    assert "http_server_request_duration_seconds_bucket{" in pod.text
    text += pod.text
    assert settings.trace_file is not None
    spans = settings.trace_file.read_text()
    secrets = [
        *(n for ns in NUMBERS.values() for n in ns),
        *(f"Candidate {n}" for ns in NUMBERS.values() for n in ns),
        *world.candidate_ids.values(),
        *(token.removeprefix("Bearer ") for token in tokens),
    ]
    for where, body in (("metrics", text), ("logs", logs.getvalue()), ("spans", spans)):
        leaked = [s for s in secrets if s in body]
        assert leaked == [], f"personal data in {where}: {leaked}"
    assert exam in logs.getvalue()


def test_json_log_lines_carry_the_trace_id() -> None:
    out = io.StringIO()
    log = logging.getLogger("examday.sre.json")
    log.addHandler(json_handler("test", out))
    log.propagate = False
    with tracer().start_as_current_span("op") as span:
        log.warning("inside %s", "a span", extra={"room": "r1"})
    log.warning("outside")
    inside, outside = (json.loads(line) for line in out.getvalue().splitlines())
    assert inside["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert inside["msg"] == "inside a span"
    assert inside["room"] == "r1"
    assert inside["level"] == "warning"
    assert "trace_id" not in outside


def test_metrics_token_is_checked_when_set() -> None:
    ops = OpsSettings(metrics_token="scrape-me-please")
    check_token(ops, "Bearer scrape-me-please")
    check_token(OpsSettings(), None)
    with pytest.raises(Unauthenticated) as refused:
        check_token(ops, "Bearer wrong")
    assert refused.value.reason == "metrics_token_required"
