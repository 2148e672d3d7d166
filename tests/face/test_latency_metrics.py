"""The verifier's latency histogram in `GET /metrics/cluster`, after real enrolments."""

from __future__ import annotations

import asyncio
import math

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from tests.face.conftest import enrol, photo_bytes, runtime_of
from tests.support.factories import new_exam

NAME = "examday_verifier_latency_seconds"
NUMBERS = [f"53{n:02d}" for n in range(6)]


Histograms = dict[tuple[str, str], dict[str, list[tuple[str, float]]]]


def _histograms(text: str) -> Histograms:
    """Per replica and lane: the bucket, count and sum samples of the latency histogram."""
    found: Histograms = {}
    for family in text_string_to_metric_families(text):
        if family.name != NAME:
            continue
        for sample in family.samples:
            kind = sample.name.removeprefix(NAME).lstrip("_")  # bucket, count, sum
            series = found.setdefault((sample.labels["replica"], sample.labels["lane"]), {})
            series.setdefault(kind, []).append((sample.labels.get("le", ""), sample.value))
    return found


def _answered(histograms: Histograms, lane: str = "join") -> int:
    return int(
        sum(h["count"][0][1] for (_, on), h in histograms.items() if on == lane and "count" in h)
    )


async def _scrape(client: httpx.AsyncClient) -> Histograms:
    response = await client.get("/metrics/cluster")
    assert response.status_code == 200, response.text
    return _histograms(response.text)


async def test_latency_histogram_counts_every_answered_request(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": NUMBERS})
    # The pool samples its replicas every scale_interval_s: the count before is the one
    # that stays put over a sampling interval (earlier tests' requests all counted).
    interval = runtime.settings.verifier.scale_interval_s + 0.5
    histograms = await _scrape(client)
    before, samples = _answered(histograms), _answered(histograms, "monitoring")
    for _ in range(20):
        await asyncio.sleep(interval)
        histograms = await _scrape(client)
        now = _answered(histograms), _answered(histograms, "monitoring")
        if now == (before, samples):
            break
        before, samples = now

    photos = ("person_a_1", "person_b_1")
    answers = await asyncio.gather(
        *(enrol(client, world, n, photo_bytes(photos[i % 2])) for i, n in enumerate(NUMBERS))
    )
    assert [a.status_code for a in answers] == [200] * len(NUMBERS), [a.text for a in answers]

    histograms = await _scrape(client)
    for _ in range(100):  # bounded: the pool's next load sample shows the new counts
        if _answered(histograms) >= before + len(NUMBERS):
            break
        await asyncio.sleep(0.2)
        histograms = await _scrape(client)
    # Enrolments are candidates' jobs: counted in the join lane, none in monitoring's.
    assert _answered(histograms) == before + len(NUMBERS)
    assert _answered(histograms, "monitoring") == samples
    assert {lane for _, lane in histograms} == {"join", "monitoring"}

    timeout = runtime.settings.verifier.call_timeout_s
    for replica, histogram in histograms.items():
        buckets = histogram["bucket"]
        bounds = [float(le) for le, _ in buckets]
        counts = [value for _, value in buckets]
        assert bounds == sorted(bounds), (replica, bounds)
        assert math.isinf(bounds[-1]), (replica, bounds)
        assert counts == sorted(counts), (replica, counts)  # cumulative
        assert counts[-1] == histogram["count"][0][1]
        total = histogram["sum"][0][1]
        # Nothing is answered after the call timeout, and real model work takes time.
        assert (total > 0) == (counts[-1] > 0), (replica, total)
        assert total <= counts[-1] * timeout
        # The bucket a job lands in bounds its latency: the sum lies between the bucket floors
        # and ceilings (the last finite bound stands for the +Inf bucket's ceiling).
        finite = [b for b in bounds if math.isfinite(b)]
        ceilings = [*finite, timeout]
        floors = [0.0, *finite]
        per_bucket = [c - p for c, p in zip(counts, [0.0, *counts[:-1]], strict=True)]
        low = sum(n * f for n, f in zip(per_bucket, floors, strict=True))
        high = sum(n * c for n, c in zip(per_bucket, ceilings, strict=True))
        assert low <= total <= high, (replica, low, total, high)
