"""Camera samples of a MediaShard, as JPEG, to the face monitor actor.

The contract with the face monitor (another actor, `examday-face-monitor` in
the Ray namespace): `observe(exam_id, room_id, candidate_id, jpeg_bytes,
wall_time)`, called through `actor_call`, fire-and-forget. At most
`in_flight` samples are on their way at once; a sample that finds the monitor
absent or busy is dropped and counted, never queued, so a slow or missing
monitor costs the media plane nothing.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import ray
from ray.exceptions import ActorUnavailableError, RayActorError

from actors.media.frame_sampler import Sample
from actors.media.tag import SessionTag
from infra.telemetry import actor_call

logger = logging.getLogger(__name__)

MONITOR_NAME = "examday-face-monitor"
# An absent monitor is looked up again at most this often, not on every sample.
LOOKUP_EVERY_S = 5.0
JPEG_QUALITY = (2, 6)  # ffmpeg qmin, qmax: lower is better


def encode_jpeg(image: npt.NDArray[np.uint8]) -> bytes:
    """An RGB image as baseline JPEG; CPU-bound, run it off the event loop."""
    height, width = image.shape[:2]
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuvj420p"
    codec.time_base = fractions.Fraction(1, 1)
    codec.qmin, codec.qmax = JPEG_QUALITY
    frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuvj420p")
    packets = [*codec.encode(frame), *codec.encode(None)]
    return bytes(packets[0])


class FaceFeed:
    """The `on_sample` callback of a MediaShard's forwarder."""

    def __init__(self, namespace: str, tags: Mapping[str, SessionTag], *, in_flight: int) -> None:
        self.counts: Counter[str] = Counter()
        self._namespace = namespace
        self._tags = tags
        self._limit = in_flight
        self._monitor: Any = None
        self._next_lookup = 0.0
        self._pending: set[asyncio.Task[None]] = set()

    async def observe(self, sample: Sample) -> None:
        tag = self._tags.get(sample.session_id)
        if tag is None or tag.source != "camera" or tag.cid is None:
            return
        self.counts["samples"] += 1
        if len(self._pending) >= self._limit:
            self.counts["dropped_busy"] += 1
            return
        monitor = await self._lookup()
        if monitor is None:
            self.counts["dropped_absent"] += 1
            return
        task = asyncio.get_running_loop().create_task(self._deliver(monitor, tag, sample))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def close(self) -> None:
        for task in self._pending:
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)

    async def _lookup(self) -> Any:
        if self._monitor is not None or time.monotonic() < self._next_lookup:
            return self._monitor
        self._next_lookup = time.monotonic() + LOOKUP_EVERY_S
        try:
            self._monitor = await asyncio.to_thread(
                ray.get_actor, MONITOR_NAME, namespace=self._namespace
            )
        except ValueError:  # no such actor (yet)
            self._monitor = None
        return self._monitor

    async def _deliver(self, monitor: Any, tag: SessionTag, sample: Sample) -> None:
        try:
            jpeg = await asyncio.to_thread(encode_jpeg, sample.image)
            self.counts["sent"] += 1
            await actor_call(monitor.observe, tag.exam, tag.room, tag.cid, jpeg, sample.wall_time)
            self.counts["delivered"] += 1
        except (RayActorError, ActorUnavailableError):
            self.counts["failed"] += 1
            self._monitor = None  # gone or restarting: look it up again later
        except Exception:
            self.counts["failed"] += 1
            logger.exception("the face monitor refused a sample")
