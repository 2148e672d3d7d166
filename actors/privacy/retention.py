"""Retention actors: one per region (`retention-{region}`), each sweeping its own region.

A sweep runs every `privacy.sweep_interval_seconds` and whenever asked
(`run`, from the gateway's organiser endpoint or the `examday purge` command).
Runs of a region never overlap (a Redis lock) and an interrupted run is
finished before any new one (`actors.privacy.run`). The actor is async,
named, detached, restarts without limit, and takes no CPU of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

import ray

from actors.privacy.run import Sweeper
from actors.privacy.state import RunState
from core.process_services import open_process
from infra.priority import Priority
from infra.settings import Settings
from infra.telemetry import actor_call, traced

log = logging.getLogger(__name__)


def actor_name(region: str) -> str:
    return f"retention-{region}"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=3)
class Retention:
    def __init__(self, settings: Settings, region: str, name: str | None = None) -> None:
        self.process = open_process(settings, "retention", priority=Priority.BULK)
        self.settings = settings
        self.region = region
        self.name = name or actor_name(region)
        self.redis = self.process.redis
        self.process.stores.bucket(region)  # an unknown region fails here, at creation
        self.regional = self.process.regional
        self.sweeper = Sweeper(settings.privacy, self.redis, self.regional, region, self.name)
        self.lock = asyncio.Lock()
        self.started = time.time()
        self.runs = 0
        self._loop: asyncio.Task[None] | None = None
        # An async actor is built on its event loop: the sweep starts with the actor, so
        # that after a crash the restarted actor finishes the interrupted run by itself.
        with contextlib.suppress(RuntimeError):
            self._ensure_loop()

    @traced
    async def run(self, exams: list[str] | None = None, mode: str = "sweep") -> dict[str, Any]:
        """Sweep now: the whole region, or only `exams`; `mode="purge"` deletes all not held."""
        self._ensure_loop()
        async with self.lock:
            self.runs += 1
            return await self.sweeper.run(exams, mode)

    @traced
    async def progress(self) -> dict[str, Any]:
        self._ensure_loop()
        return await self.sweeper.state.progress()

    @traced
    async def history(self, limit: int = 20) -> list[dict[str, Any]]:
        return await self.sweeper.state.summaries(limit)

    @traced
    async def stats(self) -> dict[str, Any]:
        self._ensure_loop()
        return {
            "name": self.name,
            "region": self.region,
            "pid": os.getpid(),
            "runs": self.runs,
            "uptime": time.time() - self.started,
        }

    def _ensure_loop(self) -> None:
        if self._loop is None or self._loop.done():
            self._loop = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        # A run interrupted by a crash is finished soon after the restart, not an interval later.
        delay = 1.0 if await RunState(self.redis, self.region).current() else None
        while True:
            await asyncio.sleep(delay or self.settings.privacy.sweep_interval_seconds)
            delay = None
            with contextlib.suppress(Exception):
                async with self.lock:
                    summary = await self.sweeper.run(None, "sweep")
                log.info(
                    "retention %s: %s planned, %s kept",
                    self.region,
                    summary["planned"],
                    summary["kept"],
                )


def get_or_create(settings: Settings, region: str, name: str | None = None) -> Any:
    """The region's retention actor (created if missing); blocking: call from a thread."""
    return Retention.options(  # type: ignore[attr-defined]
        name=name or actor_name(region),
        namespace=settings.ray_namespace,
        get_if_exists=True,
        lifetime="detached",
    ).remote(settings, region, name)


async def ensure_all(settings: Settings) -> dict[str, Any]:
    """One retention actor per configured region, each with its periodic sweep started."""
    handles = {}
    for region in settings.regions:
        handle = await asyncio.to_thread(get_or_create, settings, region)
        await actor_call(handle.progress)
        handles[region] = handle
    return handles
