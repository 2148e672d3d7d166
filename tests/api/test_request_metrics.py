"""`http_server_request_duration_seconds` on the gateway's own `GET /metrics`: one sample per
request, labelled by method, route template and status code, never by the raw path."""

from __future__ import annotations

import asyncio
import secrets
import time

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from api.metrics import HTTP_BUCKETS_S, HTTP_DURATION, LOOP_LAG, LOOP_LAG_EVERY_S, POD_FAMILIES
from tests.support.factories import joined_candidate, new_exam

NUMBER = "6610301"
Key = tuple[str, str, str]  # method, route, status


async def _counts(client: httpx.AsyncClient) -> tuple[dict[Key, float], str]:
    """Requests counted per (method, route, status), and the exposition itself."""
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    counts: dict[Key, float] = {}
    for family in text_string_to_metric_families(response.text):
        if family.name != HTTP_DURATION:
            continue
        for sample in family.samples:
            if sample.name == f"{HTTP_DURATION}_count":
                labels = sample.labels
                key = (
                    labels["http_request_method"],
                    labels["http_route"],
                    labels["http_response_status_code"],
                )
                counts[key] = sample.value
    return counts, response.text


async def test_request_durations_name_the_route_template_not_the_path(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    before, _ = await _counts(client)
    world = await new_exam(client, app.state.runtime, {"r1": [NUMBER]})
    await joined_candidate(client, world.exam_id, NUMBER)
    cid = world.candidate_ids[NUMBER]
    seen = await client.get(
        f"/v1/exams/{world.exam_id}/rooms/r1/candidates/{cid}", headers=world.proctors["r1"]
    )
    assert seen.status_code == 200, seen.text
    stray = f"/v1/no-such-{secrets.token_hex(6)}"
    assert (await client.get(stray)).status_code == 404
    # A method the HTTP conventions do not name is `_OTHER`: no label value from the client.
    assert (await client.request("PROPFIND", "/healthz")).status_code == 405
    after, text = await _counts(client)

    def added(method: str, route: str, status: str) -> float:
        key = (method, route, status)
        return after.get(key, 0) - before.get(key, 0)

    route = "/v1/exams/{exam_id}/rooms/{room_id}/candidates/{candidate_id}"
    assert added("GET", route, "200") == 1
    assert added("POST", "/v1/sessions", "201") == 1  # the login the alert watches
    assert added("POST", "/v1/me/join", "200") == 1
    assert added("GET", "", "404") == 1  # no route matched: no route label value
    assert added("_OTHER", "/healthz", "405") == 1
    assert added("GET", "/metrics", "200") == 1  # the first scrape, counted once it answered
    # No id and no raw path is a label value.
    for value in (world.exam_id, cid, NUMBER, stray, "PROPFIND"):
        assert value not in text, value
    bounds = {
        float(sample.labels["le"])
        for family in text_string_to_metric_families(text)
        if family.name == HTTP_DURATION
        for sample in family.samples
        if sample.name.endswith("_bucket")
    }
    assert bounds == {*map(float, HTTP_BUCKETS_S), float("inf")}


async def test_the_pod_exposition_holds_no_cluster_figure(client: httpx.AsyncClient) -> None:
    """Cluster figures are on /metrics/cluster only: summed over gateways, per-pod copies of
    them would count every room once per replica."""
    pod = await client.get("/metrics")
    assert pod.status_code == 200, pod.text
    families = {f.name for f in text_string_to_metric_families(pod.text)}
    assert HTTP_DURATION in families
    assert "process_cpu_seconds" in families  # the standard process collector
    assert not [name for name in families if name.startswith("examday_")]
    assert set(POD_FAMILIES) <= families
    cluster = await client.get("/metrics/cluster")
    assert cluster.status_code == 200, cluster.text
    assert HTTP_DURATION not in cluster.text
    assert "examday_candidates" in cluster.text


async def _late_wakeups(client: httpx.AsyncClient) -> tuple[float, float]:
    """(wakeups the loop-lag histogram counted, those at least 0.25 s late)."""
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    buckets = {
        sample.labels["le"]: sample.value
        for family in text_string_to_metric_families(response.text)
        if family.name == LOOP_LAG
        for sample in family.samples
        if sample.name == f"{LOOP_LAG}_bucket"
    }
    assert buckets, f"no {LOOP_LAG} on /metrics"
    return buckets["+Inf"], buckets["+Inf"] - buckets["0.25"]


async def test_a_held_up_event_loop_shows_as_late_wakeups(client: httpx.AsyncClient) -> None:
    """A saturated worker runs every request late by its loop's iteration, which no
    request duration shows (it starts once the loop reads the request): the worker's
    loop lag does. The test gateway serves on this test's loop, so holding it up holds
    the gateway up."""
    wakeups, late = await _late_wakeups(client)
    # Longer than the sampler's period: its next wakeup comes at least 0.5 s late.
    time.sleep(2 * LOOP_LAG_EVERY_S)  # noqa: ASYNC251 - a held-up loop is the point
    await asyncio.sleep(3 * LOOP_LAG_EVERY_S)
    wakeups_after, late_after = await _late_wakeups(client)
    assert wakeups_after >= wakeups + 2
    assert late_after >= late + 1
