"""The monitor's interval stretch, seen where operators and the fleet report look for it.

Real parts: the gateway's `GET /metrics/cluster`, the verifier pool's status, the monitor
actor and the session's verifier replicas (Ray), flooded with monitoring samples
(`test_join_first.Flood`) until they refuse the monitor's own.
"""

from __future__ import annotations

import asyncio

import httpx
import ray
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from actors.face.client import VerifierClient
from actors.face.monitor import MONITOR_NAME
from infra.settings import Settings
from infra.telemetry import actor_call
from loadtests.synthetic import scaled
from tests.face.conftest import enrol, jpeg, photo, photo_bytes, runtime_of
from tests.face.test_join_first import Flood
from tests.support.factories import consenting_candidate, new_exam

INTERVAL = "examday_face_monitor_sample_interval_seconds"
STRETCHES = "examday_face_monitor_interval_stretches_total"


async def exported(client: httpx.AsyncClient) -> dict[str, float]:
    """The monitor's samples of `GET /metrics/cluster`, by sample name."""
    response = await client.get("/metrics/cluster")
    assert response.status_code == 200, response.text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.labels.get("monitor") == MONITOR_NAME
    }


async def test_the_stretched_interval_shows_in_metrics_and_the_pool_status(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["4201"]})
    await consenting_candidate(client, world.exam_id, "4201")  # compared with consent only
    assert (await enrol(client, world, "4201", photo_bytes("person_a_1"))).status_code == 200
    cid = world.candidate_ids["4201"]
    monitor = await asyncio.to_thread(ray.get_actor, MONITOR_NAME, namespace=settings.ray_namespace)
    base = settings.media.sample_interval_s
    before = await exported(client)
    assert before[INTERVAL] == base  # not stretched: every sample the media plane sends

    wall_time = 1_950_000_000.0
    sample = photo_bytes("person_a_2")
    # Past what every replica the pool may have holds (earlier tests may have scaled it up):
    # some samples are refused.
    config = settings.verifier
    workers = config.max_replicas * config.max_queue + 16
    flood = Flood(VerifierClient(settings), jpeg(scaled(photo("person_b_1"), 0.6)), workers)
    try:
        await asyncio.wait_for(flood.full.wait(), 120)
        for _ in range(20):
            await actor_call(monitor.observe, world.exam_id, "r1", cid, sample, wall_time)
            wall_time += 1000.0
            if (await exported(client))[STRETCHES] > before[STRETCHES]:
                break
        during = await exported(client)
        status = await runtime.face.verifier.status()
    finally:
        await flood.stop()
    assert during[STRETCHES] > before[STRETCHES]
    assert during[INTERVAL] >= 2 * base
    # The same figures in the pool's status, the JSON `examday cluster status` reads.
    assert status["monitor"]["name"] == MONITOR_NAME
    assert status["monitor"]["stretches"] == during[STRETCHES]
    assert max(base, status["monitor"]["sample_interval_s"]) == during[INTERVAL]

    # The flood gone, answered samples bring the interval back; the candidate sits still,
    # so most of them reuse the last embedding rather than embed again.
    reused_before = (await actor_call(monitor.stats)).get("reused", 0)
    for _ in range(40):
        await actor_call(monitor.observe, world.exam_id, "r1", cid, sample, wall_time)
        wall_time += 1000.0
        if (await actor_call(monitor.stats))["sample_interval_s"] == 0.0:
            break
    after = await exported(client)
    assert after[INTERVAL] == base
    assert after[STRETCHES] == during[STRETCHES]  # a counter: it never goes back
    stats = await actor_call(monitor.stats)
    assert stats.get("reused", 0) > reused_before, stats
