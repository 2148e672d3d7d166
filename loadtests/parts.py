"""Shares of a fleet: run in this process, in local processes, or as Ray tasks.

One asyncio loop that drives a thousand HTTP candidates and forty WebRTC peers
delays its own requests: a login that the platform answered in 5 ms is timed at
whatever the loop adds. So every share watches its loop's lag (reported with
the results, so that a rehearsal says when the generator was the bottleneck),
and `--processes` gives the media candidates a process of their own, away from
the HTTP-only ones, as Locust's and k6's distributed modes do.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import time
from typing import TYPE_CHECKING

import aiohttp

from loadtests.journey import Candidate, Recorder
from loadtests.presence import PresenceSocket, sockets_session

if TYPE_CHECKING:
    from loadtests.config import FleetConfig
    from loadtests.scenario import Assets, Scenario

Plan = list[tuple[int, str, bool, bool]]  # (arrival index, number, media, switches face)
LAG_TICK_S = 0.05
MAX_LAG_SAMPLES = 100_000


def split(plan: Plan, shares: int) -> list[Plan]:
    """`shares` parts of the plan: with two or more, the media candidates get one of their
    own and the HTTP-only ones are dealt over the rest (arrival order kept in each)."""
    media = [item for item in plan if item[2]]
    http_only = [item for item in plan if not item[2]]
    if shares < 2 or not media or not http_only:
        parts = [plan[i::shares] for i in range(max(1, shares))]
    else:
        parts = [media] + [http_only[i :: shares - 1] for i in range(shares - 1)]
    return [part for part in parts if part]


async def watch_loop(recorder: Recorder, stop: asyncio.Event) -> None:
    """Sample how late this loop wakes a sleeper: the delay every timed step may include."""
    while not stop.is_set() and len(recorder.loop_lag) < MAX_LAG_SAMPLES:
        began = time.monotonic()
        await asyncio.sleep(LAG_TICK_S)
        recorder.loop_lag.append(max(0.0, time.monotonic() - began - LAG_TICK_S))


def http_session(target: str, candidates: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        target,
        connector=aiohttp.TCPConnector(limit=min(1000, candidates + 50)),
        timeout=aiohttp.ClientTimeout(total=60),
    )


async def run_candidates(
    config: FleetConfig, scenario: Scenario, assets: Assets, plan: Plan, epoch: float
) -> Recorder:
    """Run the given candidates in this process; arrival times count from `epoch`
    (wall clock, shared by every share of the fleet)."""
    recorder = Recorder(epoch=epoch)
    total = max(1, config.candidates)
    stop = asyncio.Event()
    watching = asyncio.ensure_future(watch_loop(recorder, stop))
    async with (
        http_session(config.target, len(plan)) as http,
        sockets_session(config.target) as sockets,
    ):

        async def one(index: int, number: str, media: bool, switch: bool) -> None:
            await asyncio.sleep(max(0.0, epoch + config.ramp * index / total - time.time()))
            candidate = Candidate(number, scenario, assets, recorder, media)
            if config.heartbeats == "socket":
                candidate.presence = PresenceSocket(sockets)
            if switch:
                candidate.switch_face_at = config.duration / 4
                recorder.incidents_expected["identity_mismatch"] += 1
            await candidate.run(http, config.duration, config.heartbeat_every)

        try:
            await asyncio.gather(*(one(*item) for item in plan))
        finally:
            stop.set()
            await watching
    return recorder


def _run_in_process(
    config: FleetConfig, scenario: Scenario, assets: Assets, plan: Plan, epoch: float
) -> Recorder:
    return asyncio.run(run_candidates(config, scenario, assets, plan, epoch))


async def run_shares(
    config: FleetConfig, scenario: Scenario, assets: Assets, plan: Plan
) -> list[Recorder]:
    if config.ray_address is None and config.processes < 2:
        return [await run_candidates(config, scenario, assets, plan, time.time())]
    on_ray = config.ray_address is not None
    shares = split(plan, config.workers if on_ray else config.processes)
    # Workers start and import before the first arrival.
    epoch = time.time() + (10.0 if on_ray else 5.0)
    if on_ray:
        import ray

        if not ray.is_initialized():
            ray.init(address=config.ray_address, logging_level=logging.WARNING)
        remote = ray.remote(num_cpus=1)(_run_in_process)
        refs = [remote.remote(config, scenario, assets, share, epoch) for share in shares]
        results: list[Recorder] = await asyncio.gather(*refs)
        return results
    loop = asyncio.get_running_loop()
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(len(shares), mp_context=context) as pool:
        runs = [
            loop.run_in_executor(pool, _run_in_process, config, scenario, assets, share, epoch)
            for share in shares
        ]
        return list(await asyncio.gather(*runs))
