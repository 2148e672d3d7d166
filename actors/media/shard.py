"""MediaShard: an async Ray actor hosting one `Forwarder`, the media of the rooms it owns.

The gateway (`actors.media.client.MediaRouter`) gives every room to one shard, the
least loaded live one, and sends each WHIP/WHEP call of the room there; the
shard reports its load to Redis every `load_report_interval_s`. Sessions
cross Ray as ids, never as objects.

A shard keeps nothing that must outlive it. When its process dies (kill -9,
OOM), Ray restarts it empty (`max_restarts=-1`); clients see their peer
connection fail and re-POST their WHIP/WHEP offers, which the gateway sends
to the restarted shard, or to another live one if it does not come back.
Segments stored before the crash stay in the store; only the segment in
progress is lost. A clean stop (`drain`, or Ray's graceful exit, which calls
`__ray_shutdown__`) closes every session first, so partial segments flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import psutil
import ray
from redis.exceptions import RedisError

from actors.media.aiortc import rtc
from actors.media.face_feed import FaceFeed
from actors.media.segment_store import RecordingIndex, SegmentStore
from actors.media.session import PublishSession, ViewSession
from actors.media.sfu import Forwarder
from actors.media.tag import SessionTag
from core import keys
from core.process_services import open_process
from infra.priority import Priority
from infra.settings import Settings
from infra.telemetry import traced

logger = logging.getLogger(__name__)

SHARD_KIND = "media"
DRAIN_TIMEOUT_S = 30.0


def shard_name(index: int) -> str:
    return f"media-shard-{index}"


@ray.remote(num_cpus=0, resources={"media": 1}, max_restarts=-1, max_task_retries=0)
class MediaShard:
    async def __init__(self, settings: Settings, name: str) -> None:  # type: ignore[misc]
        self.process = open_process(settings, "media_shard", priority=Priority.LIVE)
        await rtc.check_private_api()
        self.name = name
        self.settings = settings
        self.redis = self.process.redis
        self.tags: dict[str, SessionTag] = {}
        self.segments = SegmentStore(
            self.process.regional,
            RecordingIndex(self.redis),
            self.tags,
            attempts=settings.media.store_attempts,
        )
        self.faces = FaceFeed(
            settings.ray_namespace, self.tags, in_flight=settings.media.monitor_in_flight
        )
        # Created here, on the actor's event loop, where all its sessions live.
        # On a Ray node of its own, it binds and announces that node's address when asked.
        node = str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]
        self.media = settings.media.on_node(node)
        self.forwarder = Forwarder(
            self.media, segment_sink=self.segments, on_sample=self.faces.observe
        )
        await self.forwarder.start()  # its UDP port, when it has one: a taken one fails here
        self.started = time.time()
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # the first reading only starts the measurement
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._closing = False
        self._forwarded = (time.monotonic(), 0)
        self._reporter = self._loop.create_task(self._report_forever())

    # -- WHIP / WHEP ---------------------------------------------------------

    @traced
    async def publish(
        self, offer: str, tag: SessionTag, *, content_type: str | None, session_id: str
    ) -> str:
        """Answer a WHIP offer for `tag` as session `session_id`; returns the answer SDP."""
        self.tags[session_id] = tag
        try:
            answer, _ = await self.forwarder.publish(
                offer, content_type=content_type, source=tag.source, session_id=session_id
            )
        except BaseException:
            self.tags.pop(session_id, None)
            raise
        return answer

    @traced
    async def subscribe(
        self, offer: str, sources: Sequence[str], *, content_type: str | None, session_id: str
    ) -> str:
        """Answer a WHEP offer watching the publisher sessions `sources`."""
        answer, _ = await self.forwarder.subscribe(
            offer, sources, content_type=content_type, session_id=session_id
        )
        return answer

    @traced
    async def patch(
        self, session_id: str, fragment: str, *, content_type: str | None
    ) -> str | None:
        """Trickle ICE; an ICE restart's answer fragment, or None."""
        return await self.forwarder.patch(session_id, fragment, content_type=content_type)

    @traced
    async def close_session(self, session_id: str) -> None:
        await self.forwarder.close_session(session_id)

    @traced
    async def has_session(self, session_id: str) -> bool:
        return any(s.id == session_id for s in self.forwarder.sessions())

    # -- operations ----------------------------------------------------------

    @traced
    async def ping(self) -> dict[str, Any]:
        return {"name": self.name, "pid": os.getpid(), "closing": self._closing}

    @traced
    async def stats(self) -> dict[str, Any]:
        """Forwarder counters (codec work included), face feed and recording counters, load."""
        counters: dict[str, Any] = dict(await self.forwarder.stats())
        counters.update({f"face_{k}": v for k, v in self.faces.counts.items()})
        counters["segments_stored"] = self.segments.stored
        counters["segment_store_retries"] = self.segments.retries
        return {**counters, **self._load(), "pid": os.getpid()}

    @traced
    async def drain(self) -> dict[str, Any]:
        """Stop cleanly: refuse new sessions, close all (recordings flush), stop reporting."""
        await self._drain()
        return dict(await self.forwarder.stats())

    def __ray_shutdown__(self) -> None:
        # Ray's graceful exit (`__ray_terminate__`) calls this from another thread,
        # once the actor's loop has stopped: run the drain on that loop to the end.
        if self._closing or self._loop.is_closed():
            return
        drain = asyncio.wait_for(self._drain(), DRAIN_TIMEOUT_S)
        with contextlib.suppress(Exception):
            if not self._loop.is_running():
                self._loop.run_until_complete(drain)
            elif threading.get_ident() != self._loop_thread:
                asyncio.run_coroutine_threadsafe(drain, self._loop).result(DRAIN_TIMEOUT_S + 1)

    async def _drain(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._reporter.cancel()
        await self.forwarder.close()
        await self.faces.close()
        with contextlib.suppress(RedisError, OSError):
            await self.redis.delete(keys.media_load_key(self.name), keys.media_seen_key(self.name))

    # -- load ----------------------------------------------------------------

    def _load(self) -> dict[str, Any]:
        sessions = self.forwarder.sessions()
        publishers = [s for s in sessions if isinstance(s, PublishSession)]
        viewers = [s for s in sessions if isinstance(s, ViewSession)]
        return {
            "name": self.name,
            "sessions": len(sessions),
            "max_sessions": self.settings.media.max_sessions,
            "publishers": len(publishers),
            "viewers": len(viewers),
            "streams": sum(len(p.tracks) for p in publishers) + sum(len(v.tracks) for v in viewers),
            "closing": self._closing,
        }

    async def _report(self) -> None:
        now = time.monotonic()
        forwarded = int((await self.forwarder.stats()).get("bytes_forwarded", 0))
        since, before = self._forwarded
        self._forwarded = (now, forwarded)
        load = {
            **self._load(),
            "bitrate_bps": round(8 * (forwarded - before) / max(now - since, 1e-3)),
            "cpu_percent": self._process.cpu_percent(None),
            "pid": os.getpid(),
            "at": time.time(),
        }
        media = self.settings.media
        async with self.redis.pipeline(transaction=False) as pipe:
            load_ttl_ms = int(3000 * media.load_report_interval_s)
            pipe.set(keys.media_load_key(self.name), json.dumps(load), px=load_ttl_ms)
            pipe.set(keys.media_seen_key(self.name), b"1", px=int(1000 * media.gone_after_s))
            await pipe.execute()

    def _forget_closed(self) -> None:
        # A session leaves the forwarder only after its recorder flushed: its tag is done.
        live = {s.id for s in self.forwarder.sessions()}
        for session_id in [s for s in self.tags if s not in live]:
            del self.tags[session_id]

    async def _report_forever(self) -> None:
        interval = self.settings.media.load_report_interval_s
        while not self._closing:
            try:
                await asyncio.wait_for(self._report(), timeout=interval)
            except (RedisError, OSError, TimeoutError) as exc:
                logger.warning("media shard %s could not report its load: %s", self.name, exc)
            self._forget_closed()
            await asyncio.sleep(interval)
