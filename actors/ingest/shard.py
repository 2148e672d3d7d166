"""LogIngest: one shard of client log ingestion, placed by the `ingest` resource.

The gateway sends each device's batches to the shard that rendezvous hashing
gives the device's pseudonym (`core.directory`, kind `ingest`). A shard
scrubs and appends them to its own Redis Stream (`actors.ingest.append`) and,
in the background, flushes its stream to the regional object stores as a
consumer of the group `flush` (`actors.ingest.flush`); it also claims entries
that any consumer of any shard's stream left idle (a dead actor, or this
actor's previous incarnation: each incarnation is a new consumer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import ray

from actors.ingest.append import Appender, IngestBatch
from actors.ingest.flush import LogFlusher
from actors.ingest.sink import LogSink
from core import keys
from core.directory import ShardDirectory
from core.process_services import open_process
from infra.priority import Priority
from infra.pseudonym import Pseudonyms
from infra.redis import text
from infra.settings import Settings
from infra.telemetry import traced

log = logging.getLogger("examday.ingest")
_MAX_BACKOFF_S = 5.0
# A consumer with nothing pending, quiet for this many claim intervals, is removed.
_FORGET_AFTER = 30


@ray.remote(num_cpus=0, resources={"ingest": 1}, max_restarts=-1, max_task_retries=3)
class LogIngest:
    # Ray runs an async __init__ of an async actor on its loop; type checkers want None.
    async def __init__(self, settings: Settings, name: str) -> None:  # type: ignore[misc]
        self.process = open_process(settings, "log_ingest", priority=Priority.QUEUED)
        self.name = name
        self.settings = settings
        self.redis = self.process.redis
        self.stream = keys.ingest_stream_key(name)
        self.appender = Appender(
            self.redis, settings.ingest, Pseudonyms(settings.pseudonym_key), name
        )
        consumer = f"{name}:{uuid.uuid4().hex[:8]}"
        self.flusher = LogFlusher(
            self.redis,
            LogSink(self.process.regional, self.process.stores),
            settings.ingest,
            consumer,
        )
        await self.flusher.ensure_group(self.stream)
        await self.redis.sadd(keys.INGEST_STREAMS, self.stream)
        self.started = time.time()
        self.appended = 0
        self.directory = ShardDirectory(self.redis, keys.INGEST_SHARD_KIND)
        self._groups = {self.stream}
        self._loop = asyncio.get_running_loop().create_task(self._flush_forever())

    @traced
    async def append(self, batch: IngestBatch) -> dict[str, Any]:
        """Scrub and append one device's batch; the answer means it is in the stream."""
        result = await self.appender.append(batch, time.time())
        self.appended += result.accepted
        return {
            "device": result.device,
            "records": result.accepted + result.duplicates,
            "accepted": result.accepted,
            "duplicates": result.duplicates,
        }

    @traced
    async def drain(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Flush until this shard's stream is empty (tests, operations), within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        idle_ms = int(self.settings.ingest.claim_idle_seconds * 1000)
        while time.monotonic() < deadline:
            if await self.redis.xlen(self.stream) == 0:
                return {"drained": True, **self._counts()}
            await self._flush_round(block_ms=None, claim_idle_ms=idle_ms)
            await asyncio.sleep(0.05)
        return {"drained": False, **self._counts()}

    @traced
    async def stats(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "consumer": self.flusher.consumer,
            "backlog": await self.redis.xlen(self.stream),
            "uptime": time.time() - self.started,
            "flushing": not self._loop.done(),
            **self._counts(),
        }

    def _counts(self) -> dict[str, int]:
        return {
            "appended": self.appended,
            "written": self.flusher.records_written,
            "plans_redone": self.flusher.plans_redone,
            "entries_claimed": self.flusher.entries_claimed,
        }

    async def _flush_round(self, block_ms: int | None, claim_idle_ms: int | None) -> int:
        written = 0
        entries = await self.flusher.read_new(self.stream, block_ms)
        if entries:
            written += await self.flusher.flush(self.stream, entries)
        if claim_idle_ms is not None:
            written += await self._adopt(claim_idle_ms)
        return written

    async def _adopt(self, claim_idle_ms: int) -> int:
        """Flush what others cannot: entries a quiet consumer holds, in any shard's stream,
        and new entries of streams whose shard left the directory."""
        written = 0
        members = {keys.ingest_stream_key(name) for name in await self.directory.members()}
        for raw in await self.redis.smembers(keys.INGEST_STREAMS):
            stream = text(raw)
            if stream not in self._groups:
                await self.flusher.ensure_group(stream)
                self._groups.add(stream)
            stale = await self.flusher.claim_stale(stream, claim_idle_ms)
            if stream not in members:
                stale += await self.flusher.read_new(stream)
            if stale:
                written += await self.flusher.flush(stream, stale)
            await self.flusher.forget_consumers(stream, _FORGET_AFTER * claim_idle_ms)
        return written

    async def _flush_forever(self) -> None:
        ingest = self.settings.ingest
        idle_ms = int(ingest.claim_idle_seconds * 1000)
        claim_every = ingest.claim_idle_seconds / 2
        last_claim = 0.0
        backoff = 0.1
        while True:
            try:
                claim = time.monotonic() - last_claim >= claim_every
                await self._flush_round(ingest.flush_block_ms, idle_ms if claim else None)
                if claim:
                    last_claim = time.monotonic()
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a store or Redis outage: retry, bounded back-off
                log.warning("flush of %s failed: %s", self.name, type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._loop.cancel()
