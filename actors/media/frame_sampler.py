"""One decoded picture per publisher every so often, for face checks.

The forwarding path never decodes. When a sample is due the sampler asks the
publisher for a keyframe (PLI) and decodes that one frame, alone, with a fresh
decoder in an executor: a keyframe needs no earlier frame, so the rest of the
stream is never decoded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

import av
import numpy as np
import numpy.typing as npt

from actors.media.fanout import EncodedFrame, PublishedTrack

logger = logging.getLogger(__name__)

DECODERS: Final[Mapping[str, Literal["vp8", "h264"]]] = MappingProxyType(
    {"vp8": "vp8", "h264": "h264"}
)


@dataclass(frozen=True, slots=True)
class Sample:
    session_id: str
    source: str
    image: npt.NDArray[np.uint8]  # height x width x 3, RGB
    wall_time: float  # when the frame arrived, seconds since the epoch
    timestamp: int  # in the codec clock, as forwarded


SampleCallback = Callable[[Sample], Awaitable[None]]


def decode_keyframe(codec_name: str, data: bytes) -> npt.NDArray[np.uint8] | None:
    """Decode one keyframe to RGB; CPU-bound, run it in an executor."""
    decoder = av.CodecContext.create(DECODERS[codec_name.lower()], "r")
    frames = [*decoder.decode(av.Packet(data)), *decoder.decode(None)]
    if not frames:
        return None
    return np.asarray(frames[0].to_ndarray(format="rgb24"), dtype=np.uint8)


@dataclass(slots=True)
class _Due:
    at: float
    busy: bool = False


class FrameSampler:
    """Calls `callback` with one decoded frame per watched video track every `interval_s`."""

    def __init__(self, callback: SampleCallback, *, interval_s: float) -> None:
        self.decodes = 0
        self.samples = 0
        self._callback = callback
        self._interval = interval_s
        self._due: dict[PublishedTrack, _Due] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def watch(self, track: PublishedTrack) -> None:
        if track.kind != "video" or track.codec_name.lower() not in DECODERS:
            return
        self._due[track] = _Due(at=time.monotonic())
        track.add_sink(self)

    def on_frame(self, track: PublishedTrack, frame: EncodedFrame) -> None:
        due = self._due.get(track)
        if due is None or due.busy or time.monotonic() < due.at:
            return
        if not frame.keyframe:
            track.request_keyframe()
            return
        due.busy = True
        task = asyncio.get_running_loop().create_task(self._sample(track, frame, due))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def on_end(self, track: PublishedTrack) -> None:
        self._due.pop(track, None)

    async def close(self) -> None:
        self._due.clear()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _sample(self, track: PublishedTrack, frame: EncodedFrame, due: _Due) -> None:
        loop = asyncio.get_running_loop()
        try:
            self.decodes += 1
            image = await loop.run_in_executor(None, decode_keyframe, track.codec_name, frame.data)
            if image is not None:
                self.samples += 1
                await self._callback(
                    Sample(track.session_id, track.source, image, frame.arrival, frame.timestamp)
                )
        except Exception:
            logger.exception("sampling %s failed", track.session_id)
        finally:
            due.busy = False
            due.at = time.monotonic() + self._interval
