"""The shard controller: room, media and ingest shards grow and shrink with their load.

One named, detached actor looks every `controller_interval_s` at the rooms per
room shard, the WebRTC sessions per media shard and the backlog per ingest shard,
and decides for each plane (`cluster.scaling`, pure functions) to grow, shrink or
hold, within its min..max and never twice within `controller_cooldown_s`. The
minimum is never below what the gateways make sure exist (`EXAMDAY_ROOM_SHARDS`,
`EXAMDAY_MEDIA_SHARDS`, `EXAMDAY_INGEST__SHARDS`), nor below
`controller_*_shards_per_node` times the live, undrained nodes offering the
plane's resource, so that the planes follow the cluster's size.

- Room shards: growing adds a shard to the directory (rooms move to it by
  rendezvous hashing, fenced, on their next call); shrinking removes the one with
  the fewest rooms, with the hand-over of `examday cluster shards --remove`.
- Ingest shards: growing starts one more `LogIngest` (devices move to it by
  rendezvous hashing); shrinking takes one out of the directory and has it flush
  its stream before it stops. A batch that still reaches it is flushed by the
  others, which adopt the streams of shards no longer in the directory.
- Media shards: growing starts one more (placed by the `media` resource); new
  rooms go to the least loaded shard, so it fills from new rooms. Shrinking
  retires the one with the fewest sessions as a node drain does: out of the
  directory, a `reconnect` event (`reason: scale_down`) to each of its rooms,
  `controller_media_drain_s` for the clients to re-POST elsewhere, then stopped.

Every shard it starts is placed by `cluster.placement` (the node holding the fewest of
its plane's shards), and `start` first starts, placed, the shards the gateways make sure
exist (`place`).

Every decision is logged with its reason (a JSON line with `plane`, `action`,
`reason`, `shards`, `load` when logs are JSON) and counted in Redis, which
`GET /metrics/cluster` exports once for the cluster as the Prometheus counter
`examday_controller_decisions_total{action, reason}` (`api/metrics.py`).

`examday up` starts it (`start_controller`, unless `EXAMDAY_OPS__CONTROLLER_AUTOSTART`
is false) as `run=True`: a restart by Ray after a node loss runs `__init__` with the
same arguments, so the loop comes back by itself.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Callable, Container
from dataclasses import asdict
from typing import Any

import ray

from actors.ingest.shard import LogIngest
from actors.media.client import MediaRouter
from actors.media.shard import MediaShard
from actors.media.shard import shard_name as media_shard_name
from actors.rooms.client import RoomRouter, shard_name
from actors.rooms.shard import RoomShard
from cluster import placement, shards
from cluster.drain import retire_media_shard
from cluster.scaling import (
    INGEST,
    MEDIA,
    ROOMS,
    Decision,
    decide_load,
    ingest_bounds,
    media_bounds,
    node_floor,
    room_bounds,
)
from core import keys
from core.directory import ShardDirectory
from core.process_services import open_process
from infra.actor_calls import NamedActors
from infra.priority import Priority
from infra.settings import Settings
from infra.telemetry import actor_call, traced

log = logging.getLogger(__name__)
CONTROLLER_NAME = "room-shard-controller"
HISTORY_LENGTH = 100
INGEST_DRAIN_S = 30.0
# Each plane's actor class and the node resource it asks for (its `@ray.remote`).
PLANES: dict[str, tuple[Any, str]] = {
    ROOMS: (RoomShard, "room_shard"),
    MEDIA: (MediaShard, "media"),
    INGEST: (LogIngest, "ingest"),
}


@ray.remote(num_cpus=0, resources={"room_shard": 1}, max_restarts=-1, max_task_retries=0)
class ShardController:
    def __init__(self, settings: Settings, run: bool = False) -> None:
        self.process = open_process(settings, "shard_controller", priority=Priority.LIVE)
        self.settings = settings
        self.ops = settings.ops
        self.redis = self.process.redis
        self.router = RoomRouter(settings, self.redis)
        self.media = MediaRouter(settings, self.redis)
        self.ingest = ShardDirectory(self.redis, keys.INGEST_SHARD_KIND)
        self.ingest_actors = NamedActors(LogIngest, settings.ray_namespace)
        self.changed_at = {ROOMS: 0.0, MEDIA: 0.0, INGEST: 0.0}
        self.nodes: dict[str, int] = {}
        self.lock = asyncio.Lock()
        self._loop: asyncio.Task[None] | None = None
        if run:
            try:
                # An async actor's __init__ runs on its event loop (Ray 2.x).
                self._loop = asyncio.get_running_loop().create_task(self._run_forever())
            except RuntimeError:
                log.warning("controller: no event loop at start; waiting for start()")

    @traced
    async def start(self) -> bool:
        """Start the shards the gateways make sure exist, each placed (`place`), then the
        periodic loop (idempotent); returns whether the loop was already running."""
        await self.place()
        running = self._loop is not None and not self._loop.done()
        if not running:
            self._loop = asyncio.get_running_loop().create_task(self._run_forever())
        return running

    @traced
    async def place(self) -> dict[str, str | None]:
        """Start, spread over the nodes (`cluster.placement`), every shard a gateway makes
        sure exists at its start (`EXAMDAY_ROOM_SHARDS`, ...) and every one the directories
        list, and list them; a no-op for those that run. Run before the gateways start
        (`examday up` does), the gateways find them instead of starting them all on the
        node they are connected to. Returns shard -> node (None: waiting for a node)."""
        async with self.lock:
            placed: dict[str, str | None] = {}
            rooms = await self.router.directory.members()
            room_names = rooms or [shard_name(i) for i in range(self.settings.room_shards)]
            media = await self.media.directory.members()
            media_names = _union(media, media_shard_name, self.settings.media_shards)
            ingest = await self.ingest.members()
            ingest_names = _union(ingest, keys.ingest_shard_name, self.settings.ingest.shards)
            for plane, names, members, directory in (
                (ROOMS, room_names, rooms, self.router.directory),
                (MEDIA, media_names, media, self.media.directory),
                (INGEST, ingest_names, ingest, self.ingest),
            ):
                for name in names:
                    known = {n: node for n, node in placed.items() if node and n in names}
                    placed[name] = await self._start_shard(plane, name, names, known)
                    if name not in members:
                        await directory.add(name, {})
            return placed

    async def _start_shard(
        self, plane: str, name: str, peers: list[str], known: dict[str, str] | None = None
    ) -> str | None:
        actor_class, resource = PLANES[plane]
        args = (self.settings, name)
        node = await placement.start(
            actor_class, name, self.settings.ray_namespace, args, resource, peers, known
        )
        log.info("controller: %s shard %s on node %s", plane, name, node or "(pending)")
        return node

    @traced
    async def running(self) -> bool:
        return self._loop is not None and not self._loop.done()

    @traced
    async def step(self) -> list[dict[str, Any]]:
        """Look once at each plane, act on its decision, record it; returns the decisions."""
        async with self.lock:
            self.nodes = await asyncio.to_thread(nodes_offering)
            planes = (self._rooms_step, self._media_step, self._ingest_step)
            return [asdict(await step()) for step in planes]

    def _floor(self, ensured: int, per_node: int, resource: str) -> int:
        return node_floor(ensured, per_node, self.nodes.get(resource, 0))

    async def _rooms_step(self) -> Decision:
        loads = await self._room_loads()
        floor = self._floor(
            self.settings.room_shards, self.ops.controller_room_shards_per_node, "room_shard"
        )
        bounds = room_bounds(self.ops, floor)
        since = time.monotonic() - self.changed_at[ROOMS]
        decision = decide_load(list(loads.values()), bounds, since, ROOMS)
        if decision.action == "grow":
            name = _first_free(shard_name, loads)
            await self._start_shard(ROOMS, name, list(loads))
            await self.router.add_shard(name)
        elif decision.action == "shrink":
            ensured = {shard_name(i) for i in range(self.settings.room_shards)}
            lightest = _lightest(loads, ensured)
            try:
                await shards._remove(self.router, lightest, sorted(loads))
            except SystemExit as refused:  # the shard set changed under us: next round decides
                log.warning("controller: could not remove %s: %s", lightest, refused)
        return await self._done(decision)

    async def _media_step(self) -> Decision:
        names = await self.media.directory.members()
        reports = await self.media.loads(names)
        # A shard without a fresh report (just started) counts as empty.
        sessions = {name: int(reports.get(name, {}).get("sessions", 0)) for name in names}
        floor = self._floor(
            self.settings.media_shards, self.ops.controller_media_shards_per_node, "media"
        )
        bounds = media_bounds(self.ops, floor)
        since = time.monotonic() - self.changed_at[MEDIA]
        decision = decide_load(list(sessions.values()), bounds, since, MEDIA)
        if decision.action == "grow":
            name = _first_free(media_shard_name, sessions)
            await self._start_shard(MEDIA, name, names)
            await self.media.add_shard(name)
        elif decision.action == "shrink":
            ensured = {media_shard_name(i) for i in range(self.settings.media_shards)}
            lightest = _lightest(sessions, ensured)
            deadline = time.monotonic() + self.ops.controller_media_drain_s
            await retire_media_shard(self.router, self.media, lightest, deadline, "scale_down")
        return await self._done(decision)

    async def _ingest_step(self) -> Decision:
        names = await self.ingest.members()
        backlogs = {}
        for name in names:
            stats = await actor_call((await self.ingest_actors.get(name)).stats)
            backlogs[name] = int(stats["backlog"])
        floor = self._floor(
            self.settings.ingest.shards, self.ops.controller_ingest_shards_per_node, "ingest"
        )
        bounds = ingest_bounds(self.ops, floor)
        since = time.monotonic() - self.changed_at[INGEST]
        decision = decide_load(list(backlogs.values()), bounds, since, INGEST)
        if decision.action == "grow":
            name = _first_free(keys.ingest_shard_name, backlogs)
            await self._start_shard(INGEST, name, names)
            await asyncio.to_thread(self.ingest_actors.create, name, self.settings, name)
            await self.ingest.add(name, {})
        elif decision.action == "shrink":
            ensured = {keys.ingest_shard_name(i) for i in range(self.settings.ingest.shards)}
            await self._retire_ingest(_lightest(backlogs, ensured))
        return await self._done(decision)

    async def _retire_ingest(self, name: str) -> None:
        await self.ingest.remove(name)
        handle = await self.ingest_actors.get(name)
        try:
            await asyncio.wait_for(actor_call(handle.drain, INGEST_DRAIN_S), INGEST_DRAIN_S + 5)
        except Exception:  # what it leaves unflushed, the other shards adopt
            log.warning("controller: %s did not flush before it stopped", name)
        ray.kill(handle, no_restart=True)
        self.ingest_actors.forget(name)

    async def _done(self, decision: Decision) -> Decision:
        if decision.changes:
            self.changed_at[decision.plane] = time.monotonic()
        await self._record(decision)
        return decision

    async def _room_loads(self) -> dict[str, int]:
        names = await self.router.directory.members()
        handles = [await self.router.handle(name) for name in names]
        # stats is not a traced method of RoomShard: a plain call.
        stats = await asyncio.gather(*(h.stats.remote() for h in handles))
        return {name: int(s["rooms"]) for name, s in zip(names, stats, strict=True)}

    async def _record(self, decision: Decision) -> None:
        log.info(
            "controller: %s %s (%s) shards=%d load=%d",
            decision.plane,
            decision.action,
            decision.reason,
            decision.shards,
            decision.load,
            extra=asdict(decision),
        )
        entry = json.dumps({**asdict(decision), "at": time.time()})
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(keys.CONTROLLER_DECISIONS, f"{decision.action}:{decision.reason}", 1)
            pipe.lpush(keys.CONTROLLER_HISTORY, entry)
            pipe.ltrim(keys.CONTROLLER_HISTORY, 0, HISTORY_LENGTH - 1)
            await pipe.execute()

    async def _run_forever(self) -> None:
        try:
            await self.place()
        except Exception:  # the steps start what is missing too, in time
            log.exception("controller: placing the shards failed")
        while True:
            await asyncio.sleep(self.ops.controller_interval_s)
            try:
                await self.step()
            except Exception:  # a shard restarting must not stop the controller
                log.exception("controller: step failed")


def nodes_offering() -> dict[str, int]:
    """Live nodes, not being drained, per custom resource they offer (blocking)."""
    draining = placement.draining()
    counts: dict[str, int] = {}
    for node in ray.nodes():  # type: ignore[no-untyped-call]
        if node.get("Alive") and node["NodeID"] not in draining:
            for resource in node.get("Resources", {}):
                counts[resource] = counts.get(resource, 0) + 1
    return counts


def _lightest(loads: dict[str, int], ensured: set[str]) -> str:
    """The shard to remove: one the gateways do not make sure exist (they would start
    it again), then the least loaded, then the one added last."""
    return min(loads, key=lambda name: (name in ensured, loads[name], -len(name), _rev(name)))


def _rev(name: str) -> tuple[int, ...]:
    return tuple(-ord(c) for c in name)


def get_or_create(settings: Settings, name: str = CONTROLLER_NAME, *, run: bool = False) -> Any:
    """The controller actor (blocking: call it in a thread); one per cluster in operation.

    `run` starts its loop with the actor (and again after each restart); an actor that
    already exists keeps the arguments it was made with, so callers still call `start`.
    """
    return ShardController.options(  # type: ignore[attr-defined]
        name=name,
        namespace=settings.ray_namespace,
        get_if_exists=True,
        lifetime="detached",
    ).remote(settings, run)


async def history(redis: Any, limit: int = 20) -> list[dict[str, Any]]:
    """The controller's latest decisions, newest first."""
    return [json.loads(raw) for raw in await redis.lrange(keys.CONTROLLER_HISTORY, 0, limit - 1)]


def _union(members: list[str], name: Callable[[int], str], ensured: int) -> list[str]:
    """The directory's members, then the shards the gateways make sure exist."""
    return members + [name(i) for i in range(ensured) if name(i) not in members]


def _first_free(name: Callable[[int], str], taken: Container[str]) -> str:
    """The lowest-numbered shard name not in use."""
    return next(name(i) for i in itertools.count() if name(i) not in taken)
