"""One published track fanned out, still encoded, to its viewers and other sinks.

A `PublishedTrack` gets two feeds from its publisher's receiver: every RTP
packet the receiver accepts (`rtc.tap_rtp`), which goes on to each viewer's
`ForwardTrack` (`actors.media.rtp_forward`: rewritten and sent as it is), and, only
while a frame sink wants them, complete encoded frames (`rtc.tap_receiver`),
which go to the recorder and the sampler.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from aiortc.rtp import RtpPacket

from actors.media.rtp_forward import ForwardTrack, keyframe_start, ntp_now

__all__ = ["EncodedFrame", "ForwardTrack", "FrameSink", "PublishedTrack", "is_keyframe"]

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
        self.packets_in = 0
        self.frames_in = 0
        self.keyframes_in = 0
        self.keyframe_requests_sent = 0
        self._send_pli = send_pli
        self._interval = keyframe_interval_s
        self._sinks: list[FrameSink] = []
        self._viewers: tuple[ForwardTrack, ...] = ()
        self._video = kind == "video"
        self._codec_key = self.codec_name.lower()
        self._ssrc: int | None = None
        self._highest: int | None = None  # highest sequence number seen
        self._last_timestamp: int | None = None
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

    def add_viewer(self, viewer: ForwardTrack) -> None:
        if self.ended:
            viewer.on_end(self)
            return
        self._viewers = (*self._viewers, viewer)

    def remove_viewer(self, viewer: ForwardTrack) -> None:
        self._viewers = tuple(v for v in self._viewers if v is not viewer)

    @property
    def viewers(self) -> tuple[ForwardTrack, ...]:
        return self._viewers

    def on_rtp(self, packet: RtpPacket) -> bool:
        """An RTP packet from the publisher (on the event loop); True: assemble frames too."""
        if self.ended:
            return False
        self.packets_in += 1
        seq = packet.sequence_number
        if packet.ssrc != self._ssrc:
            if self._ssrc is not None:  # the publisher restarted its stream
                for viewer in self._viewers:
                    viewer.resync()
            self._ssrc, self._highest = packet.ssrc, None
        # Only a packet newer than any before can start a viewer (not a late retransmission).
        newer = self._highest is None or 0 < (seq - self._highest) & 0xFFFF < 0x8000
        if newer:
            self._highest = seq
        if self._video:
            new_frame = packet.timestamp != self._last_timestamp
            start = newer and keyframe_start(self._codec_key, packet.payload, new_frame)
            if newer:
                self._last_timestamp = packet.timestamp
            if start:
                self.keyframes_in += 1
                self._requested_at = None
            self.frames_in += packet.marker
        else:
            start = newer
            self.frames_in += 1
        if self._viewers:
            ntp = ntp_now()
            abs_time = (ntp >> 14 & 0xFFFFFF).to_bytes(3, "big")  # abs-send-time, 6.18 s
            extensions: dict[Any, bytes] = {}
            for viewer in self._viewers:
                try:
                    viewer.forward(packet, start, abs_time, ntp, extensions)
                except Exception:  # one broken viewer must not starve the others
                    logger.exception("forwarding to a viewer of %s failed", self.session_id)
        return bool(self._sinks)

    def push(self, data: bytes, timestamp: int) -> None:
        """A complete encoded frame from the publisher, for the frame sinks."""
        if self.ended or not self._sinks:
            return
        keyframe = is_keyframe(self.codec_name, data)
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
        viewers, self._viewers = self._viewers, ()
        ending: list[FrameSink | ForwardTrack] = [*sinks, *viewers]
        for sink in ending:
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
