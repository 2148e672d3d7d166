"""The room shard controller: room shards grow and shrink with the rooms they hold.

One named, detached actor looks every `controller_interval_s` at the rooms per
shard and decides (`decide`, a pure function) to grow, shrink or hold, within
`controller_min_shards`..`controller_max_shards` and never twice within
`controller_cooldown_s`. Growing adds a shard to the directory (rooms move to it
by rendezvous hashing, fenced, on their next call); shrinking removes the shard
with the fewest rooms with the same hand-over as `examday cluster shards --remove`.
Every decision is logged with its reason (a JSON line with `action`, `reason`,
`shards`, `rooms` when logs are JSON) and counted in Redis, which `GET /metrics`
exports as `examday_controller_decisions{action, reason}`.

`examday up` starts it (`start_controller`, unless `EXAMDAY_OPS__CONTROLLER_AUTOSTART`
is false) as `run=True`: a restart by Ray after a node loss runs `__init__` with the
same arguments, so the loop comes back by itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import ray

from api.rooms import RoomRouter, shard_name
from cluster import shards
from infra import redis as redis_conn
from infra.metrics import DECISIONS_KEY
from infra.ops_settings import OpsSettings
from infra.settings import Settings
from infra.telemetry import setup_tracing, traced

log = logging.getLogger(__name__)
CONTROLLER_NAME = "room-shard-controller"
HISTORY_KEY = "examday:controller:history"
HISTORY_LENGTH = 100


@dataclass(frozen=True)
class Decision:
    action: str  # grow | shrink | hold
    reason: str
    shards: int
    rooms: int

    @property
    def changes(self) -> bool:
        return self.action != "hold"


def decide(loads: list[int], ops: OpsSettings, since_change_s: float) -> Decision:
    """What to do given the rooms each shard holds and the time since the last change."""
    count, total = len(loads), sum(loads)

    def decision(action: str, reason: str) -> Decision:
        return Decision(action, reason, count, total)

    if count < ops.controller_min_shards:
        return decision("grow", "below_min_shards")
    if count > ops.controller_max_shards:
        return decision("shrink", "above_max_shards")
    if since_change_s < ops.controller_cooldown_s:
        return decision("hold", "cooldown")
    if total / count > ops.controller_rooms_high:
        if count >= ops.controller_max_shards:
            return decision("hold", "at_max_shards")
        return decision("grow", "rooms_per_shard_high")
    # Shrink only when the shards left would still be under the high mark (no flapping).
    shrinkable = count > ops.controller_min_shards and total / count < ops.controller_rooms_low
    if shrinkable and total / (count - 1) < ops.controller_rooms_high:
        return decision("shrink", "rooms_per_shard_low")
    return decision("hold", "in_band")


@ray.remote(num_cpus=0, resources={"room_shard": 1}, max_restarts=-1, max_task_retries=0)
class ShardController:
    def __init__(self, settings: Settings, run: bool = False) -> None:
        setup_tracing(settings, "shard_controller")
        self.settings = settings
        self.ops = settings.ops
        self.redis = redis_conn.connect(settings)
        self.router = RoomRouter(settings, self.redis)
        self.changed_at = 0.0
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
        """Start the periodic loop (idempotent); returns whether it was already running."""
        running = self._loop is not None and not self._loop.done()
        if not running:
            self._loop = asyncio.get_running_loop().create_task(self._run_forever())
        return running

    @traced
    async def step(self) -> dict[str, Any]:
        """Look once, act on the decision, record it; returns the decision."""
        async with self.lock:
            loads = await self._loads()
            decision = decide(list(loads.values()), self.ops, time.monotonic() - self.changed_at)
            if decision.action == "grow":
                await self._grow(loads)
            elif decision.action == "shrink":
                await self._shrink(loads)
            if decision.changes:
                self.changed_at = time.monotonic()
            await self._record(decision)
            return asdict(decision)

    async def _loads(self) -> dict[str, int]:
        names = await self.router.directory.members()
        handles = [await self.router.handle(name) for name in names]
        # stats is not a traced method of RoomShard: a plain call.
        stats = await asyncio.gather(*(h.stats.remote() for h in handles))
        return {name: int(s["rooms"]) for name, s in zip(names, stats, strict=True)}

    async def _grow(self, loads: dict[str, int]) -> None:
        index = 0
        while shard_name(index) in loads:
            index += 1
        await self.router.add_shard(shard_name(index))

    async def _shrink(self, loads: dict[str, int]) -> None:
        lightest = min(loads, key=lambda name: (loads[name], name))
        try:
            await shards._remove(self.router, lightest, sorted(loads))
        except SystemExit as refused:  # the shard set changed under us: next round decides
            log.warning("controller: could not remove %s: %s", lightest, refused)

    async def _record(self, decision: Decision) -> None:
        log.info(
            "controller: %s (%s) shards=%d rooms=%d",
            decision.action,
            decision.reason,
            decision.shards,
            decision.rooms,
            extra=asdict(decision),
        )
        entry = json.dumps({**asdict(decision), "at": time.time()})
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(DECISIONS_KEY, f"{decision.action}:{decision.reason}", 1)
            pipe.lpush(HISTORY_KEY, entry)
            pipe.ltrim(HISTORY_KEY, 0, HISTORY_LENGTH - 1)
            await pipe.execute()

    async def _run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ops.controller_interval_s)
            try:
                await self.step()
            except Exception:  # a shard restarting must not stop the controller
                log.exception("controller: step failed")


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
    return [json.loads(raw) for raw in await redis.lrange(HISTORY_KEY, 0, limit - 1)]
