"""One published track fanned out, still encoded, to its viewers and other sinks.

A `PublishedTrack` receives complete encoded frames from a publisher's
receiver (see `rtc.tap_receiver`) and hands each to its sinks: a
`ForwardTrack` per viewer (an aiortc track that yields `av.Packet`s, which the
viewer's sender packetizes without encoding), the recorder and the sampler.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    data: bytes
    timestamp: int  # in the codec clock, from 0 at the publisher's first frame, unwrapped
    keyframe: bool
    arrival: float  # wall clock, seconds since the epoch


def is_keyframe(codec_name: str, data: bytes) -> bool:
    """Can a decoder start at this frame? Read from the bitstream header only."""
    name = codec_name.lower()
    if name == "vp8":
        # RFC 6386 section 9.1: bit 0 of the frame tag is 0 for key frames.
        return bool(data) and not data[0] & 0x01
    if name == "h264":
        # Annex B from aiortc's depayloader: look for an IDR slice (type 5).
        start = data.find(b"\x00\x00\x01")
        while start != -1 and start + 3 < len(data):
            if data[start + 3] & 0x1F == 5:
                return True
            start = data.find(b"\x00\x00\x01", start + 3)
        return False
    return True  # audio frames are all independent


class FrameSink(Protocol):
    def on_frame(self, track: PublishedTrack, frame: EncodedFrame) -> None: ...

    def on_end(self, track: PublishedTrack) -> None: ...


class PublishedTrack:
    """One audio or video track of a publisher session."""

    def __init__(
        self,
        *,
        session_id: str,
        source: str,
        kind: str,
        codec: Any,
        send_pli: Callable[[], Coroutine[Any, Any, None]],
        keyframe_interval_s: float,
    ) -> None:
        self.session_id = session_id
        self.source = source
        self.kind = kind
        self.codec = codec  # RTCRtpCodecCapability pinned in the answer
        self.codec_name = str(codec.mimeType.split("/")[1])
        self.clock_rate = int(codec.clockRate)
        self.time_base = fractions.Fraction(1, self.clock_rate)
        self.ended = False
        self.frames_in = 0
        self.keyframes_in = 0
        self.keyframe_requests_sent = 0
        self._send_pli = send_pli
        self._interval = keyframe_interval_s
        self._sinks: list[FrameSink] = []
        self._requested_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def add_sink(self, sink: FrameSink) -> None:
        if self.ended:
            sink.on_end(self)
            return
        self._sinks.append(sink)

    def remove_sink(self, sink: FrameSink) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)

    def push(self, data: bytes, timestamp: int) -> None:
        """A complete encoded frame from the publisher (called on the event loop)."""
        if self.ended:
            return
        keyframe = is_keyframe(self.codec_name, data)
        self.frames_in += 1
        if keyframe and self.kind == "video":
            self.keyframes_in += 1
            self._requested_at = None
        frame = EncodedFrame(data, timestamp, keyframe, time.time())
        for sink in tuple(self._sinks):
            try:
                sink.on_frame(self, frame)
            except Exception:  # one broken consumer must not starve the others
                logger.exception("%s sink of %s failed", type(sink).__name__, self.session_id)

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        sinks, self._sinks = self._sinks, []
        for sink in sinks:
            try:
                sink.on_end(self)
            except Exception:
                logger.exception("ending %s of %s failed", type(sink).__name__, self.session_id)

    def request_keyframe(self) -> bool:
        """Ask the publisher for a keyframe unless one was asked for recently and is due."""
        if self.kind != "video" or self.ended:
            return False
        now = time.monotonic()
        if self._requested_at is not None and now - self._requested_at < self._interval:
            return False
        self._requested_at = now
        self.keyframe_requests_sent += 1
        task = asyncio.get_running_loop().create_task(self._send_pli())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True


class ForwardTrack(MediaStreamTrack):
    """What one viewer's sender reads: the source's frames as `av.Packet`s.

    Nothing is queued before the sender first asks (no stale burst after
    connecting). Video starts, and restarts after the viewer fell behind, on
    a keyframe, which it requests from the publisher.
    """

    def __init__(
        self,
        source: PublishedTrack,
        *,
        queue_frames: int,
        on_source_end: Callable[[ForwardTrack], None] | None = None,
    ) -> None:
        super().__init__()
        self.kind = source.kind
        self.source = source
        self.frames = 0
        self.bytes = 0
        self.dropped = 0
        self.keyframe_requests = 0  # from the viewer (PLI/FIR), relayed upstream
        self._queue: asyncio.Queue[EncodedFrame | None] = asyncio.Queue()
        self._limit = queue_frames
        self._started = False
        self._need_keyframe = source.kind == "video"
        self._last_pts: int | None = None
        self._on_source_end = on_source_end
        source.add_sink(self)

    def on_frame(self, track: PublishedTrack, frame: EncodedFrame) -> None:
        if not self._started:
            return
        if self._queue.qsize() >= self._limit:
            self._fall_behind()
        if self._need_keyframe and not frame.keyframe:
            self.dropped += 1
            self.source.request_keyframe()  # again, if the last request got lost
            return
        self._need_keyframe = False
        self._queue.put_nowait(frame)

    def on_end(self, track: PublishedTrack) -> None:
        self._queue.put_nowait(None)
        if self._on_source_end is not None:
            self._on_source_end(self)

    def on_keyframe_request(self) -> None:
        """The viewer lost a picture (PLI/FIR on its sender): relay upstream."""
        self.keyframe_requests += 1
        self.source.request_keyframe()

    def _fall_behind(self) -> None:
        while not self._queue.empty():
            if self._queue.get_nowait() is None:
                self._queue.put_nowait(None)
                return
            self.dropped += 1
        if self.kind == "video":
            self._need_keyframe = True
            self.source.request_keyframe()

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        if not self._started:
            self._started = True
            if self._need_keyframe:
                self.source.request_keyframe()
        frame = await self._queue.get()
        if frame is None:
            self.stop()
            raise MediaStreamError
        pts = frame.timestamp
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1  # keep this viewer's clock monotonic
        self._last_pts = pts
        packet = av.Packet(frame.data)
        packet.pts = pts
        packet.time_base = self.source.time_base
        self.frames += 1
        self.bytes += len(frame.data)
        return packet

    def stop(self) -> None:
        self.source.remove_sink(self)
        super().stop()
