"""FaceVerifierPool: creates the verifier replicas and scales them on queue length.

One detached pool actor per `verifier.pool_name`. Every `scale_interval_s` it asks each
replica how many frames it holds and aims for `ceil(held / target_queue)` replicas,
bounded by `min_replicas` and `max_replicas`: up at once (a new replica joins the list
when its models are loaded), down only after the load stayed low for
`scale_down_after_s`, and then gracefully: the replica leaves the list first, so that
clients stop choosing it, and is killed once it holds nothing (or after a bounded wait).
Not up while the replicas holding frames are starved of CPU (`scale_up_min_cpu`): on a
saturated node another CPU replica only adds a model load and takes CPU from the rest.

Replica names are kept in Redis, so a restarted pool adopts its replicas instead of
leaking them. Replicas ask for the `face` resource, fractional CPUs, and GPUs when the
cluster has any.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from typing import Any

import ray
from ray.exceptions import RayError

from actors.face.verifier import FaceVerifier
from core import keys
from core.process_services import open_process
from infra.priority import Priority
from infra.redis import text
from infra.settings import Settings
from infra.settings.face import VerifierSettings
from infra.telemetry import actor_call, traced

log = logging.getLogger(__name__)

# Clients refresh their replica list this often; a draining replica waits at least this.
CLIENT_REFRESH_S = 5.0
LOAD_TIMEOUT_S = 2.0
START_TIMEOUT_S = 180.0
# The face monitor's actor name (`actors.face.monitor`, which imports this module through
# the client): the pool reports its pacing beside the replicas' loads.
MONITOR_NAME = "examday-face-monitor"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class FaceVerifierPool:
    def __init__(self, settings: Settings) -> None:
        self.process = open_process(settings, "face_pool", priority=Priority.LIVE)
        self.settings = settings
        self.config = settings.verifier
        self.redis = self.process.redis
        self.replicas: dict[str, Any] = {}  # name -> handle, ready and routable
        self.starting: dict[str, asyncio.Task[None]] = {}
        self.loads: dict[str, dict[str, Any]] = {}
        self.cpu_rates: dict[str, float] = {}  # cores each replica used over the last round
        self._cpu_marks: dict[str, tuple[float, float]] = {}  # name -> (monotonic, CPU s)
        self.held_back = 0  # scale-ups not made because the replicas were starved
        self.low_since: float | None = None
        self.batching: tuple[int, float] | None = None  # set by `configure`
        self._scaler: asyncio.Task[None] | None = None
        self._adopted = False
        self._lock = asyncio.Lock()
        self._monitor: Any = None

    @traced
    async def members(self) -> list[tuple[str, Any]]:
        """The routable replicas; starts the pool (and its minimum) on first use."""
        await self._ensure()
        return list(self.replicas.items())

    @traced
    async def status(self) -> dict[str, Any]:
        await self._ensure()
        return {
            "replicas": sorted(self.replicas),
            "starting": sorted(self.starting),
            "loads": self.loads,
            "cpu_rates": {name: round(rate, 2) for name, rate in self.cpu_rates.items()},
            "held_back": self.held_back,
            "min": self.config.min_replicas,
            "max": self.config.max_replicas,
            # Monitoring slows down first: how far its sampling interval has stretched is
            # the other half of the verifier's load (empty while no monitor runs).
            "monitor": await self._monitor_stats(),
        }

    @traced
    async def configure(self, max_batch: int, max_wait_s: float) -> None:
        """New batching for every replica, now and later (operators tune without a restart)."""
        await self._ensure()
        self.batching = (max_batch, max_wait_s)
        await asyncio.gather(
            *(
                actor_call(handle.configure, max_batch, max_wait_s)
                for handle in self.replicas.values()
            )
        )

    async def _monitor_stats(self) -> dict[str, Any]:
        """The face monitor's stats, or nothing when it does not run or does not answer in
        time: a status read must not wait on monitoring."""
        try:
            if self._monitor is None:
                self._monitor = await asyncio.to_thread(
                    ray.get_actor, MONITOR_NAME, namespace=self.settings.ray_namespace
                )
            stats: dict[str, Any] = await asyncio.wait_for(
                actor_call(self._monitor.stats), LOAD_TIMEOUT_S
            )
        except ValueError:  # no monitor (yet): looked up again next time
            return {}
        except (TimeoutError, RayError):
            self._monitor = None
            return {}
        return {"name": MONITOR_NAME, **stats}

    # -- life cycle -----------------------------------------------------------------

    async def _ensure(self) -> None:
        if self._scaler is None or self._scaler.done():
            self._scaler = asyncio.get_running_loop().create_task(self._scale_forever())
        async with self._lock:
            if not self._adopted:
                await self._adopt()
                self._adopted = True
            missing = self.config.min_replicas - len(self.replicas) - len(self.starting)
            for _ in range(max(0, missing)):
                self._start_replica()
        if not self.replicas and self.starting:
            # Nobody can be served before one replica is up: wait for the first.
            await asyncio.wait(list(self.starting.values()), return_when=asyncio.FIRST_COMPLETED)

    async def _adopt(self) -> None:
        """After a restart of the pool: take back the replicas it had."""
        for raw in await self.redis.smembers(keys.face_pool_replicas_key(self.config.pool_name)):
            name = text(raw)
            try:
                handle = await asyncio.to_thread(
                    ray.get_actor, name, namespace=self.settings.ray_namespace
                )
            except ValueError:
                await self.redis.srem(keys.face_pool_replicas_key(self.config.pool_name), name)
                continue
            self.replicas[name] = handle

    def _start_replica(self) -> None:
        name = f"{self.config.pool_name}-{secrets.token_hex(4)}"
        self.starting[name] = asyncio.get_running_loop().create_task(self._create(name))

    async def _create(self, name: str) -> None:
        try:
            await self.redis.sadd(keys.face_pool_replicas_key(self.config.pool_name), name)
            options = await asyncio.to_thread(self._options, name)
            handle = FaceVerifier.options(**options).remote(  # type: ignore[attr-defined]
                self.settings, name
            )
            # Bounded: a replica that cannot be placed (no `face` node) must not hang us.
            await asyncio.wait_for(actor_call(handle.ready), START_TIMEOUT_S)
            if self.batching is not None:
                await actor_call(handle.configure, *self.batching)
            self.replicas[name] = handle
        except Exception:
            log.exception("verifier replica %s did not start", name)
            await self.redis.srem(keys.face_pool_replicas_key(self.config.pool_name), name)
            with contextlib.suppress(Exception):
                ray.kill(ray.get_actor(name, namespace=self.settings.ray_namespace))
        finally:
            self.starting.pop(name, None)

    def _options(self, name: str) -> dict[str, Any]:
        options: dict[str, Any] = {
            "name": name,
            "namespace": self.settings.ray_namespace,
            "lifetime": "detached",
            "num_cpus": self.config.num_cpus,
            "resources": {"face": 1},
        }
        cluster: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
        if self.config.num_gpus > 0 and cluster.get("GPU", 0) > 0:
            options["num_gpus"] = self.config.num_gpus
        return options

    # -- autoscaling ----------------------------------------------------------------

    async def _scale_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.scale_interval_s)
            try:
                await self._scale_once()
            except Exception:
                log.exception("verifier pool scaling round failed")

    async def _scale_once(self) -> None:
        names = list(self.replicas)
        loads = await asyncio.gather(*(self._load(name) for name in names))
        self.loads = {name: load for name, load in zip(names, loads, strict=True) if load}
        self._measure_cpu()
        current = len(self.replicas) + len(self.starting)
        replicas = [
            (int(load["held"]), self.cpu_rates.get(name)) for name, load in self.loads.items()
        ]
        gpus = any(load.get("gpu") for load in self.loads.values())
        wanted = target_replicas(self.config, current, replicas, gpus=gpus)
        if wanted < queue_target(self.config, sum(held for held, _ in replicas)):
            self.held_back += 1
        if wanted > current:
            self.low_since = None
            for _ in range(wanted - current):
                self._start_replica()
        elif wanted < current and not self.starting:
            now = time.monotonic()
            self.low_since = self.low_since or now
            if now - self.low_since >= self.config.scale_down_after_s:
                self.low_since = None
                await self._drain(names[-1])
        else:
            self.low_since = None

    def _measure_cpu(self) -> None:
        now = time.monotonic()
        for name in list(self._cpu_marks):
            if name not in self.loads:
                self._cpu_marks.pop(name)
                self.cpu_rates.pop(name, None)
        for name, load in self.loads.items():
            cpu = float(load.get("cpu_seconds", 0.0))
            mark = self._cpu_marks.get(name)
            if mark is not None and now > mark[0]:
                self.cpu_rates[name] = max(0.0, cpu - mark[1]) / (now - mark[0])
            self._cpu_marks[name] = (now, cpu)

    async def _load(self, name: str) -> dict[str, Any]:
        handle = self.replicas.get(name)
        if handle is None:
            return {}
        try:
            load: dict[str, Any] = await asyncio.wait_for(actor_call(handle.load), LOAD_TIMEOUT_S)
        except Exception:
            return {}  # restarting or gone: it scales as zero load this round
        return load

    async def _drain(self, name: str) -> None:
        handle = self.replicas.pop(name, None)
        if handle is None:
            return
        await asyncio.sleep(CLIENT_REFRESH_S)
        deadline = time.monotonic() + self.config.call_timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                load = await asyncio.wait_for(actor_call(handle.load), LOAD_TIMEOUT_S)
                if not load["held"]:
                    break
            await asyncio.sleep(0.5)
        await self.redis.srem(keys.face_pool_replicas_key(self.config.pool_name), name)
        with contextlib.suppress(Exception):
            ray.kill(handle, no_restart=True)


def get_or_create(settings: Settings) -> Any:
    """The pool actor of `settings.verifier.pool_name` (blocking: call it in a thread)."""
    return FaceVerifierPool.options(  # type: ignore[attr-defined]
        name=settings.verifier.pool_name,
        namespace=settings.ray_namespace,
        get_if_exists=True,
        lifetime="detached",
        resources={"face": 1},
    ).remote(settings)


def target_replicas(
    config: VerifierSettings,
    current: int,
    replicas: list[tuple[int, float | None]],
    *,
    gpus: bool = False,
) -> int:
    """Replicas wanted, from each replica's (frames held, cores used last round or None).

    `ceil(held / target_queue)` within the bounds; but never more than `current` while
    the replicas that hold frames used, on average, less than `scale_up_min_cpu` of a
    core: they are starved by their node, not short of replicas.
    """
    wanted = queue_target(config, sum(frames for frames, _ in replicas))
    busy = [rate for frames, rate in replicas if frames and rate is not None]
    starved = not gpus and busy and sum(busy) / len(busy) < config.scale_up_min_cpu
    if wanted > current and starved:
        return max(current, config.min_replicas)
    return wanted


def queue_target(config: VerifierSettings, held: int) -> int:
    """`ceil(held / target_queue)` replicas, within the pool's bounds."""
    return min(config.max_replicas, max(config.min_replicas, math.ceil(held / config.target_queue)))
