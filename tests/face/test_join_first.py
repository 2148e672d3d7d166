"""Join first: under a flood of monitoring samples a candidate is answered, monitoring slows.

Real parts throughout: the gateway, the session's verifier replicas (Ray), the monitor
actor, Redis and the regional store. The flood is what the monitor sends
(`VerifierClient.analyse`), kept at the replicas' queue limit by refilling it.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import httpx
import ray
from fastapi import FastAPI

from actors.face.client import VerifierClient
from actors.face.monitor import MONITOR_NAME, SamplePacer
from infra.errors import Unavailable
from infra.priority import Priority
from infra.settings import Settings
from infra.telemetry import actor_call
from loadtests.synthetic import scaled
from tests.face.conftest import enrol, image_headers, jpeg, photo, photo_bytes, runtime_of
from tests.support.factories import consenting_candidate, new_exam


class Flood:
    """Monitoring samples sent by `workers` callers at once, each sending again when answered."""

    def __init__(self, verifier: VerifierClient, frame: bytes, workers: int) -> None:
        self._verifier, self._frame = verifier, frame
        self._numbers = itertools.count()
        self.waiting: set[int] = set()  # samples sent and not answered yet
        self.answered: list[int] = []
        self.refused = 0
        self.full = asyncio.Event()  # set at the first refusal: the replicas' queues are full
        self._stop = asyncio.Event()
        self._tasks = [asyncio.ensure_future(self._worker()) for _ in range(workers)]

    async def _worker(self) -> None:
        while not self._stop.is_set():
            number = next(self._numbers)
            self.waiting.add(number)
            try:
                await self._verifier.analyse(self._frame)
                self.answered.append(number)
            except Unavailable:
                self.refused += 1
                self.full.set()
                await asyncio.sleep(0.02)
            finally:
                self.waiting.discard(number)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def replica_loads(settings: Settings, verifier: VerifierClient) -> list[dict[str, Any]]:
    names = (await verifier.status())["replicas"]
    handles = [
        await asyncio.to_thread(ray.get_actor, name, namespace=settings.ray_namespace)
        for name in names
    ]
    return [await actor_call(handle.load) for handle in handles]


async def test_a_join_verification_goes_ahead_of_a_monitoring_flood_which_slows_down(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["4101"]}, face_attempts=3)
    assert (await enrol(client, world, "4101", photo_bytes("person_a_1"))).status_code == 200
    cid = world.candidate_ids["4101"]
    candidate = await consenting_candidate(client, world.exam_id, "4101")
    monitor = await asyncio.to_thread(ray.get_actor, MONITOR_NAME, namespace=settings.ray_namespace)
    base = settings.media.sample_interval_s
    at_start = await actor_call(monitor.stats)
    assert at_start["sample_interval_s"] == 0.0

    sampler = VerifierClient(settings)
    # Past what every replica the pool may have holds: an earlier test (test_autoscaling)
    # may have left it scaled up, and a flood that one replica's queue bounds would never
    # see the monitor's samples refused by two.
    config = settings.verifier
    workers = config.max_replicas * config.max_queue + 16
    flood = Flood(sampler, jpeg(scaled(photo("person_b_1"), 0.6)), workers)
    try:
        # The replicas hold a full queue of samples, and refuse the rest.
        await asyncio.wait_for(flood.full.wait(), 120)

        # A candidate verifies at the join: answered while samples sent before it wait.
        before = set(flood.waiting)
        verification = await client.post(
            "/v1/me/verification",
            content=photo_bytes("person_a_2"),
            headers=image_headers(candidate),
        )
        still_waiting = before & flood.waiting
        assert verification.status_code == 200, verification.text
        assert verification.json()["match"] is True
        print(f"{len(before)} samples waiting at the join, {len(still_waiting)} still after it")
        assert still_waiting, "the join waited behind every sample sent before it"

        # The monitor's own samples are refused too: its interval stretches, and a sample
        # that comes sooner than the interval is skipped before it costs the verifier.
        wall_time = 1_900_000_000.0
        jpeg_a = photo_bytes("person_a_2")
        for _ in range(20):
            await actor_call(monitor.observe, world.exam_id, "r1", cid, jpeg_a, wall_time)
            wall_time += 1000.0
            if (await actor_call(monitor.stats))["stretches"] > at_start["stretches"]:
                break
        stretched = await actor_call(monitor.stats)
        assert stretched["stretches"] > at_start["stretches"]
        assert stretched["sample_interval_s"] >= 2 * base
        await actor_call(monitor.observe, world.exam_id, "r1", cid, jpeg_a, wall_time - 999.0)
        assert (await actor_call(monitor.stats))["paced"] == stretched.get("paced", 0) + 1
    finally:
        await flood.stop()
    loads = await replica_loads(settings, sampler)
    print({load["name"]: {k: load[k] for k in ("shed", "refused", "niceness")} for load in loads})
    # The replica that verified ran the join on its join lane, at the configured niceness,
    # while its monitoring lane's thread ran the samples a step below it.
    lanes = [load["niceness"] for load in loads]
    expected = (
        {"join": Priority.LIVE, "monitoring": Priority.QUEUED}
        if settings.verifier.join_priority == "live"
        else {"join": Priority.QUEUED, "monitoring": Priority.BULK}
    )
    assert expected in lanes, lanes
    print(f"flood: {len(flood.answered)} answered, {flood.refused} refused")

    # Once the flood is gone, answered samples bring the interval back to every sample.
    for _ in range(40):
        await actor_call(monitor.observe, world.exam_id, "r1", cid, jpeg_a, wall_time)
        wall_time += 1000.0
        if (await actor_call(monitor.stats))["sample_interval_s"] == 0.0:
            break
    assert (await actor_call(monitor.stats))["sample_interval_s"] == 0.0


def test_the_pacer_doubles_on_refusals_and_eases_back_on_answers() -> None:
    pacer = SamplePacer(base_s=10.0, max_s=60.0)
    assert pacer.due(wall_time=1.0, last_sent=0.5)  # no overload: every sample
    intervals = []
    for _ in range(4):
        pacer.refused()
        intervals.append(pacer.interval_s)
    assert intervals == [20.0, 40.0, 60.0, 60.0]
    assert not pacer.due(wall_time=100.0, last_sent=50.0)
    assert pacer.due(wall_time=110.0, last_sent=50.0)
    eased = []
    while pacer.interval_s:
        pacer.answered()
        eased.append(pacer.interval_s)
    # A tenth of the base per answered sample, then straight back to every sample.
    assert eased[:2] == [59.0, 58.0]
    assert len(eased) == 50
    assert eased[-2:] == [11.0, 0.0]
