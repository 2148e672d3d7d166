"""Shares of a fleet: run in this process, in local processes, or by Ray workers of a cluster.

One asyncio loop that drives a thousand HTTP candidates and forty WebRTC peers
delays its own requests: a login that the platform answered in 5 ms is timed at
whatever the loop adds. So every share watches its loop's lag and its CPU (reported
per share with the results, so that a rehearsal says which generator was the
bottleneck), and the fleet is spread: `--processes` over local processes (the media
candidates get one of their own, away from the HTTP-only ones, as Locust's and k6's
distributed modes do), `--ray ADDRESS --workers N` over Ray workers of a cluster, cameras
included, each worker an actor with a loop of its own on the next node in turn. Ray
workers start together: each is created and set up (imports, assets, connections'
first costs) and reports ready, and only then is the start instant chosen and sent to
all, so that no share's arrivals begin while another is still importing aiortc.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import multiprocessing
import os
import resource
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp

from loadtests.behaviours import LATE_AT
from loadtests.journey import Candidate, GatewayBusy, Recorder
from loadtests.presence import PresenceSocket, sockets_session
from loadtests.tally import EVERY_S, Counting, Send, Tallies, Tally, TallyQueue, send_every

if TYPE_CHECKING:
    from loadtests.config import FleetConfig
    from loadtests.scenario import Assets, Scenario

# (arrival index, number, media, switches face, behaviours)
Plan = list[tuple[int, str, bool, bool, tuple[str, ...]]]
LAG_TICK_S = 0.05
MAX_LAG_SAMPLES = 100_000
# Ray workers: how long all may take to report ready, and the start's margin after that
# (the start instant is sent to each; they must all receive it before it passes).
READY_TIMEOUT_S = 180.0
START_MARGIN_S = 2.0
# The lag drill (`FleetConfig.stall_worker`, for the tests only): the chosen share's loop
# is blocked this long this often, as a generator short of CPU is. A blocking sleep, not
# a spin: it delays the loop alike without taking a core from the machine under test.
STALL_S = 0.3
STALL_EVERY_S = 1.5


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


def deal(plan: Plan, workers: int) -> list[Plan]:
    """`workers` parts of the plan for machines of their own: cameras dealt over all of
    them as evenly as the HTTP-only candidates (arrival order kept in each)."""
    dealt = [item for item in plan if item[2]] + [item for item in plan if not item[2]]
    parts = [sorted(dealt[i::workers]) for i in range(max(1, workers))]
    return [part for part in parts if part]


async def watch_loop(recorder: Recorder, stop: asyncio.Event) -> None:
    """Sample how late this loop wakes a sleeper: the delay every timed step may include."""
    while not stop.is_set() and len(recorder.loop_lag) < MAX_LAG_SAMPLES:
        began = time.monotonic()
        await asyncio.sleep(LAG_TICK_S)
        recorder.loop_lag.append(max(0.0, time.monotonic() - began - LAG_TICK_S))


async def _stall(stop: asyncio.Event) -> None:
    """The lag drill: block this loop now and then (see STALL_S)."""
    while not stop.is_set():
        await asyncio.sleep(STALL_EVERY_S)
        time.sleep(STALL_S)  # noqa: ASYNC251 - blocking the loop is the point


def http_session(
    target: str, candidates: int, recorder: Recorder | None = None
) -> aiohttp.ClientSession:
    """The HTTP steps' session; a request the gateway refused as busy is sent again
    (`GatewayBusy`), counted in `recorder` when given."""
    retries = recorder.busy_retries if recorder is not None else Counter[str]()
    return aiohttp.ClientSession(
        target,
        connector=aiohttp.TCPConnector(limit=min(1000, candidates + 50)),
        timeout=aiohttp.ClientTimeout(total=60),
        middlewares=(GatewayBusy(retries),),
    )


def _cpu_s() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


def arrival(config: FleetConfig, index: int, behaviours: tuple[str, ...]) -> tuple[float, float]:
    """(seconds after the start it arrives, seconds it stays): in the ramp, or a quarter
    of the exam after it for a late one, who stays the rest of the exam."""
    if "late" in behaviours:
        return config.ramp + LATE_AT * config.duration, (1 - LATE_AT) * config.duration
    return config.ramp * index / max(1, config.candidates), config.duration


async def run_candidates(
    config: FleetConfig,
    scenario: Scenario,
    assets: Assets,
    plan: Plan,
    epoch: float,
    *,
    index: int = 0,
    node: str = "local",
    send: Send | None = None,
) -> Recorder:
    """Run the given candidates in this process; arrival times count from `epoch`
    (wall clock, shared by every share of the fleet). The recorder's `share` says where
    they ran and what it cost: share `index` on `node`, its CPU and wall time. `send`
    gets the share's live counts (`loadtests.tally`) while it runs."""
    recorder = Recorder(epoch=epoch)
    stop = asyncio.Event()
    began_cpu, began = _cpu_s(), time.monotonic()
    watching = asyncio.ensure_future(watch_loop(recorder, stop))
    counting = Counting(index, recorder)
    sending = asyncio.ensure_future(send_every(counting, send, stop)) if send else None
    stalling = asyncio.ensure_future(_stall(stop)) if config.stall_worker == index else None
    async with (
        http_session(config.target, len(plan), recorder) as http,
        sockets_session(config.target) as sockets,
    ):

        async def one(
            order: int, number: str, media: bool, switch: bool, behaviours: tuple[str, ...]
        ) -> None:
            at, stay = arrival(config, order, behaviours)
            await asyncio.sleep(max(0.0, epoch + at - time.time()))
            recorder.arrived += 1
            candidate = Candidate(
                number, scenario, assets, recorder, media, behaviours=behaviours,
                switch_hosts=config.switch_hosts,
            )  # fmt: skip
            if config.heartbeats == "socket":
                candidate.presence = PresenceSocket(sockets)
            if switch:
                candidate.switch_face_at = stay / 4
                recorder.incidents_expected["identity_mismatch"] += 1
            await candidate.run(http, stay, config.heartbeat_every)

        try:
            await asyncio.gather(*(one(*item) for item in plan))
        finally:
            stop.set()
            await watching
            if stalling is not None:
                await stalling
            if sending is not None:
                await sending
    wall, cpu = time.monotonic() - began, _cpu_s() - began_cpu
    recorder.share = {
        "worker": index, "node": node, "pid": os.getpid(), "candidates": len(plan),
        "media": sum(1 for item in plan if item[2]), "cpu_seconds": round(cpu, 2),
        "cpu_percent": round(100 * cpu / max(wall, 1e-9), 1), "wall_s": round(wall, 2),
        "reconnects_told": len(recorder.reconnects_told),
    }  # fmt: skip
    return recorder


# A local process's queue to the fleet's progress line, given when the process starts
# (a multiprocessing queue cannot travel as a task's argument).
_tallies_out: TallyQueue | None = None


def _send_tallies_to(channel: TallyQueue) -> None:
    global _tallies_out
    _tallies_out = channel


def _run_in_process(
    config: FleetConfig, scenario: Scenario, assets: Assets, plan: Plan, epoch: float, index: int
) -> Recorder:
    send = _tallies_out.put if _tallies_out is not None else None
    return asyncio.run(
        run_candidates(config, scenario, assets, plan, epoch, index=index, send=send)
    )


class FleetWorker:
    """One share of the fleet in a Ray worker process, on a loop of its own (an actor, so
    that it is set up once and then told when to start). Threaded (two calls at once), so
    that `tally` answers while `run` drives the share."""

    def __init__(
        self, index: int, config: FleetConfig, scenario: Scenario, assets: Assets, plan: Plan
    ) -> None:
        self.index, self.config, self.scenario, self.assets, self.plan = (
            index, config, scenario, assets, plan,
        )  # fmt: skip
        import ray

        self.node = str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]
        self.latest: Tally | None = None

    def ready(self) -> dict[str, Any]:
        """Imports done, assets here: where it runs."""
        import aiortc  # noqa: F401 - loaded before the start, not in its first second

        return {"worker": self.index, "node": self.node, "pid": os.getpid()}

    def run(self, epoch: float) -> Recorder:
        return asyncio.run(
            run_candidates(
                self.config, self.scenario, self.assets, self.plan, epoch,
                index=self.index, node=self.node, send=self._keep,
            )
        )  # fmt: skip

    def tally(self) -> Tally | None:
        return self.latest

    def _keep(self, tally: Tally) -> None:
        self.latest = tally  # one reference swapped: safe to read from the other thread


async def _ask_for_tallies(workers: list[Any], tallies: Tallies, stop: asyncio.Event) -> None:
    while not stop.is_set():
        # A worker that died is the run's error, told when its `run` fails, not here.
        answers = await asyncio.gather(*(w.tally.remote() for w in workers), return_exceptions=True)
        for tally in answers:
            if isinstance(tally, Tally):
                tallies.take(tally)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), EVERY_S)


async def _drain_tallies(channel: TallyQueue, tallies: Tallies, stop: asyncio.Event) -> None:
    while not stop.is_set():
        tallies.drain(channel)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), EVERY_S / 2)
    tallies.drain(channel)


async def _until_done(
    runs: list[Any], follow: Callable[[asyncio.Event], Awaitable[None]]
) -> list[Recorder]:
    """The shares' records once all have ended; `follow` (a task fed by a stop event)
    keeps the live counts coming until then."""
    stop = asyncio.Event()
    following = asyncio.ensure_future(follow(stop))
    try:
        return list(await asyncio.gather(*runs))
    finally:
        stop.set()
        await following


async def run_on_ray(
    config: FleetConfig, scenario: Scenario, assets: Assets, plan: Plan, tallies: Tallies
) -> list[Recorder]:
    """The fleet dealt over `config.workers` Ray workers, one per node in turn; all start
    at one instant, chosen once every worker has reported ready."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not ray.is_initialized():
        ray.init(address=config.ray_address, logging_level=logging.WARNING)
    nodes = sorted(
        (n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0),  # type: ignore[no-untyped-call]
        key=lambda n: str(n["NodeManagerAddress"]),
    )
    if not nodes:
        raise SystemExit("no live Ray node with CPUs to run the fleet on")
    remote = ray.remote(FleetWorker)
    shared = ray.put(assets)
    workers: list[Any] = [
        remote.options(
            num_cpus=config.worker_cpus,
            max_restarts=0,
            max_concurrency=2,
            scheduling_strategy=NodeAffinitySchedulingStrategy(
                nodes[i % len(nodes)]["NodeID"], soft=True
            ),
        ).remote(i, config, scenario, shared, share)
        for i, share in enumerate(deal(plan, config.workers))
    ]
    try:
        ready = [w.ready.remote() for w in workers]
        await asyncio.wait_for(asyncio.gather(*ready), READY_TIMEOUT_S)
        epoch = time.time() + START_MARGIN_S
        runs = [w.run.remote(epoch) for w in workers]
        return await _until_done(runs, lambda stop: _ask_for_tallies(workers, tallies, stop))
    finally:
        for worker in workers:
            ray.kill(worker)


async def run_shares(
    config: FleetConfig,
    scenario: Scenario,
    assets: Assets,
    plan: Plan,
    tallies: Tallies | None = None,
) -> list[Recorder]:
    """Every share's records, once all have ended; meanwhile `tallies` gets their live
    counts."""
    tallies = Tallies() if tallies is None else tallies
    if config.ray_address is not None:
        return await run_on_ray(config, scenario, assets, plan, tallies)
    if config.processes < 2:
        run = run_candidates(config, scenario, assets, plan, time.time(), send=tallies.take)
        return [await run]
    shares = split(plan, config.processes)
    epoch = time.time() + 5.0  # processes start and import before the first arrival
    loop = asyncio.get_running_loop()
    context = multiprocessing.get_context("spawn")
    channel: TallyQueue = context.Queue()
    with concurrent.futures.ProcessPoolExecutor(
        len(shares), mp_context=context, initializer=_send_tallies_to, initargs=(channel,)
    ) as pool:
        runs = [
            loop.run_in_executor(
                pool, _run_in_process, config, scenario, assets, share, epoch, index
            )
            for index, share in enumerate(shares)
        ]
        return await _until_done(runs, lambda stop: _drain_tallies(channel, tallies, stop))
