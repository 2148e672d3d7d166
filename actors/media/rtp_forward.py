"""RTP-level forwarding to one viewer: each packet rewritten, never re-packetized.

A `PublishedTrack` hands every RTP packet its publisher's receiver accepts
(after SRTP and RTX unwrapping) to each viewer's `ForwardTrack`, which rewrites
SSRC, payload type, sequence number and timestamp for that viewer and writes
the packet through the viewer's own DTLS transport (SRTP), on the event loop,
in the call that received it: no queue, no task, no packetizer per viewer.

The viewer's `RTCRtpSender` still runs its RTCP loop (sender reports from the
counters kept here, NACKs answered from the history kept here, PLI/FIR
relayed), but its RTP loop idles on `ForwardTrack.recv`, which returns only
when forwarding ends; `actors.media.aiortc.rtp_output` writes for it.

Sequence numbers and timestamps get per-viewer offsets, set when a viewer
(re)starts on a keyframe: a viewer that joins late starts its own sequence
there, and one whose source changes SSRC continues its sequence.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time
from collections.abc import Callable
from typing import Any, Protocol

from aiortc import RTCRtpSender
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtpPacket

from actors.media.aiortc.rtp_output import RtpOutput

logger = logging.getLogger(__name__)


class ForwardedTrack(Protocol):
    """What a `ForwardTrack` needs of the published track it forwards.

    `actors.media.fanout.PublishedTrack` is the one implementation; naming it
    here instead would make the two modules import each other.
    """

    @property
    def kind(self) -> str: ...

    @property
    def ended(self) -> bool: ...

    def add_viewer(self, viewer: ForwardTrack) -> None: ...

    def remove_viewer(self, viewer: ForwardTrack) -> None: ...

    def request_keyframe(self) -> bool: ...


NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900 (NTP) to 1970 (Unix)
_HEADER = struct.Struct("!BBHLL")


def ntp_now() -> int:
    return int((time.time() + NTP_EPOCH_OFFSET) * (1 << 32))


def keyframe_start(codec_name: str, payload: bytes, new_frame: bool) -> bool:
    """Does a decoder that starts at this RTP packet get a whole keyframe?

    `codec_name` in lower case ("vp8", "h264"; anything else counts as audio).
    """
    if codec_name == "vp8":
        # RFC 7741 4.2: S=1 and PID=0 start a frame; then the VP8 header's P bit.
        if len(payload) < 2 or payload[0] & 0x17 != 0x10:
            return False
        pos = 1
        if payload[0] & 0x80:
            ext = payload[1]
            pos = 2
            if ext & 0x80:
                pos += 2 if len(payload) > pos and payload[pos] & 0x80 else 1
            pos += bool(ext & 0x40) + bool(ext & 0x30)
        return len(payload) > pos and not payload[pos] & 0x01
    if codec_name == "h264":
        # RFC 6184: SPS or IDR first in a new access unit (alone, in a STAP-A, or a FU-A start).
        if not new_frame or not payload:
            return False
        nal = payload[0] & 0x1F
        if nal == 24:
            return len(payload) > 3 and payload[3] & 0x1F in (5, 7)
        if nal == 28:
            return len(payload) > 1 and payload[1] & 0x80 != 0 and payload[1] & 0x1F in (5, 7)
        return nal in (5, 7)
    return True  # audio: any packet starts a decodable stream


class ForwardTrack(MediaStreamTrack):
    """One viewer's copy of a published track, forwarded packet by packet.

    It is the viewer sender's track only so that aiortc's sender loop has
    something to wait on; `recv` returns (raising) when forwarding ends.
    Video starts, and restarts after the source changed SSRC, on a keyframe,
    which it requests from the publisher.
    """

    def __init__(
        self,
        source: ForwardedTrack,
        *,
        on_source_end: Callable[[ForwardTrack], None] | None = None,
    ) -> None:
        super().__init__()
        self.kind = source.kind
        self.source = source
        self.frames = 0
        self.packets = 0
        self.bytes = 0
        self.dropped = 0  # frames dropped while waiting for a keyframe
        self.keyframe_requests = 0  # from the viewer (PLI/FIR), relayed upstream
        self.output: RtpOutput | None = None
        self._on_source_end = on_source_end
        self._idle: asyncio.Future[None] | None = None
        self._done = False
        self._need_start = True
        self._seq_offset = 0
        self._ts_offset = 0
        self._floor = 0  # source sequence numbers before this one are not forwarded
        self._last_seq: int | None = None  # what was last sent: seq, timestamp, when (NTP)
        self._last_ts = 0
        self._last_ntp = 0
        self._unreported = 0  # packets sent, and their payload bytes, not yet in the sender's
        self._unreported_bytes = 0  # counters
        source.add_viewer(self)

    def attach(self, sender: RTCRtpSender) -> RtpOutput:
        """Send through `sender` (whose track this is) once it starts."""
        self.output = RtpOutput(sender, self._ready)
        return self.output

    def _ready(self) -> None:
        if self._need_start and self.kind == "video":
            self.source.request_keyframe()

    def resync(self) -> None:
        """Wait for the next keyframe and continue this viewer's sequence from there."""
        self._need_start = True
        if self.output is not None and self.output.ready:
            self._ready()

    def forward(
        self,
        packet: RtpPacket,
        start: bool,
        abs_time: bytes,
        ntp: int,
        extensions: dict[tuple[bytes, bytes, bytes, bool], bytes],
    ) -> None:
        """One RTP packet of the source (called on the event loop, for every viewer).

        `extensions` is shared by the viewers of this packet: each layout of
        header extensions is built once.
        """
        out = self.output
        if out is None or not out.ready:
            return
        seq = packet.sequence_number
        if self._need_start:
            if not start:
                self.dropped += packet.marker
                self.source.request_keyframe()  # again, if the last request got lost
                return
            self._rebase(seq, packet.timestamp, out.clock_rate, ntp)
        else:
            age = (seq - self._floor) & 0xFFFF
            if age >= 0x8000:
                return  # from before this viewer started
            if age >= 0x4000:
                self._floor = (seq - 0x2000) & 0xFFFF
        seq = (seq + self._seq_offset) & 0xFFFF
        timestamp = (packet.timestamp + self._ts_offset) & 0xFFFFFFFF
        payload = packet.payload
        ext = extensions.get(out.layout)
        if ext is None:
            ext = extensions[out.layout] = out.extension(abs_time, packet.extensions.audio_level)
        first = (0x90 if ext else 0x80) | (0x20 if packet.padding_size else 0)
        data = (
            _HEADER.pack(first, packet.marker << 7 | out.payload_type, seq, timestamp, out.ssrc)
            + ext
            + payload
        )
        if packet.padding_size:
            data += bytes(packet.padding_size - 1) + bytes([packet.padding_size])
        if not out.write(data, seq):
            return
        self.packets += 1
        self._unreported += 1
        self.bytes += len(payload)
        self._unreported_bytes += len(payload)
        self._last_seq, self._last_ts, self._last_ntp = seq, timestamp, ntp
        if packet.marker or self.kind == "audio":
            self.frames += 1
            # Once per frame is fresh enough for sender reports.
            out.report(self._unreported, self._unreported_bytes, ntp, timestamp)
            self._unreported = self._unreported_bytes = 0

    def _rebase(self, seq: int, timestamp: int, clock_rate: int, ntp: int) -> None:
        if self._last_seq is None:
            next_seq, next_ts = random.getrandbits(15), random.getrandbits(32)
        else:
            # Continue where this viewer left off, its clock running on meanwhile.
            elapsed = max(1, (ntp - self._last_ntp) * clock_rate >> 32)
            next_seq, next_ts = self._last_seq + 1, self._last_ts + elapsed
        self._seq_offset = (next_seq - seq) & 0xFFFF
        self._ts_offset = (next_ts - timestamp) & 0xFFFFFFFF
        self._floor = seq
        self._need_start = False

    def on_end(self, track: ForwardedTrack) -> None:
        self._finish()
        if self._on_source_end is not None:
            self._on_source_end(self)

    def on_keyframe_request(self) -> None:
        """The viewer lost a picture (PLI/FIR on its sender): relay upstream."""
        self.keyframe_requests += 1
        self.source.request_keyframe()

    @property
    def retransmissions(self) -> int:
        return self.output.history.lookups if self.output is not None else 0

    async def recv(self) -> Any:
        if self.readyState != "live" or self._done:
            raise MediaStreamError
        if self._idle is None:
            self._idle = asyncio.get_running_loop().create_future()
        await self._idle
        raise MediaStreamError

    def _finish(self) -> None:
        self._done = True
        if self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    def stop(self) -> None:
        self.source.remove_viewer(self)
        self._finish()
        super().stop()
