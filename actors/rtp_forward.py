"""RTP-level forwarding to one viewer: each packet rewritten, never re-packetized.

A `PublishedTrack` hands every RTP packet its publisher's receiver accepts
(after SRTP and RTX unwrapping) to each viewer's `ForwardTrack`, which rewrites
SSRC, payload type, sequence number and timestamp for that viewer and writes
the packet through the viewer's own DTLS transport (SRTP), on the event loop,
in the call that received it: no queue, no task, no packetizer per viewer.

The viewer's `RTCRtpSender` still runs its RTCP loop (sender reports from the
counters kept here, NACKs answered from the history kept here, PLI/FIR
relayed), but its RTP loop idles on `ForwardTrack.recv`, which returns only
when forwarding ends. The aiortc internals this takes are named in
`actors.rtc.PRIVATE_API`; this module uses them on the per-packet path, where
an extra call per packet and viewer would cost more than it hides.

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
from typing import TYPE_CHECKING, Any

from aiortc import RTCRtpSender
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RTP_HISTORY_SIZE, HeaderExtensionsMap, RtpPacket, pack_header_extensions

from actors.rtc import PRIVATE_API

if TYPE_CHECKING:
    from actors.fanout import PublishedTrack

logger = logging.getLogger(__name__)

URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900 (NTP) to 1970 (Unix)
HISTORY_MASK = RTP_HISTORY_SIZE - 1
_HEADER = struct.Struct("!BBHLL")
_SSRC = PRIVATE_API["sender_ssrc"]
_HISTORY = PRIVATE_API["sender_rtp_history"]
_PACKETS = PRIVATE_API["sender_packet_count"]
_OCTETS = PRIVATE_API["sender_octet_count"]
_NTP = PRIVATE_API["sender_ntp_timestamp"]
_RTP_TS = PRIVATE_API["sender_rtp_timestamp"]
_SEND_RTP = PRIVATE_API["transport_send_rtp"]

assert RTP_HISTORY_SIZE & HISTORY_MASK == 0, "the history is indexed by masking"


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


class RtpHistory:
    """Stands in for a sender's RTP history: the packets as sent, parsed on a NACK only."""

    def __init__(self) -> None:
        self.packets: list[bytes | None] = [None] * RTP_HISTORY_SIZE
        self.extensions = HeaderExtensionsMap()
        self.lookups = 0  # NACKed packets found here (aiortc resends them, as RTX if negotiated)

    def get(self, index: int, default: RtpPacket | None = None) -> RtpPacket | None:
        data = self.packets[index]
        if data is None:
            return default
        self.lookups += 1
        return RtpPacket.parse(data, self.extensions)

    def __setitem__(self, index: int, packet: RtpPacket) -> None:
        self.packets[index] = packet.serialize(self.extensions)


class RtpOutput:
    """Writes finished RTP packets as `sender` would: its SSRC, transport, history, counters."""

    def __init__(self, sender: RTCRtpSender, on_ready: Callable[[], None]) -> None:
        self.sender = sender
        self.ssrc: int = getattr(sender, _SSRC)
        self.history = RtpHistory()
        self.ready = False
        self.payload_type = 0
        self.clock_rate = 90000
        self.stalls = 0
        self._send_rtp: Callable[[bytes], Any] | None = None
        self._abs_tag = b""
        self._level_tag = b""
        self._mid: tuple[int, bytes] | None = None
        self._abs_id = 0
        self._level_id = 0
        self._one_byte = True
        self._fixed = b""
        self._layouts: dict[int, tuple[bytes, bytes]] = {}
        self._on_ready = on_ready
        setattr(sender, _HISTORY, self.history)
        original = sender.send

        async def send(parameters: Any) -> None:
            self._configure(parameters)
            await original(parameters)
            self._send_rtp = getattr(sender.transport, _SEND_RTP)
            self.ready = True
            self._on_ready()

        # aiortc calls `send` once DTLS is up, with the negotiated PT, extensions and mid.
        sender.send = send  # type: ignore[method-assign]

    def _configure(self, parameters: Any) -> None:
        codec = parameters.codecs[0]
        self.payload_type = int(codec.payloadType)
        self.clock_rate = int(codec.clockRate)
        self.history.extensions.configure(parameters)
        ids = {ext.uri: int(ext.id) for ext in parameters.headerExtensions}
        if URI_MID in ids and parameters.muxId:
            self._mid = (ids[URI_MID], str(parameters.muxId).encode())
        one_byte = all(0 < i <= 14 for i in ids.values()) and (
            self._mid is None or len(self._mid[1]) <= 16
        )
        if URI_ABS_SEND_TIME in ids:
            self._abs_tag = bytes([ids[URI_ABS_SEND_TIME] << 4 | 2]) if one_byte else b"\0"
            self._abs_id = ids[URI_ABS_SEND_TIME]
        if URI_AUDIO_LEVEL in ids:
            self._level_tag = bytes([ids[URI_AUDIO_LEVEL] << 4]) if one_byte else b"\0"
            self._level_id = ids[URI_AUDIO_LEVEL]
        self._one_byte = one_byte
        fixed = b"" if self._mid is None else bytes([self._mid[0] << 4 | len(self._mid[1]) - 1])
        self._fixed = fixed + (self._mid[1] if self._mid else b"")

    def extension(self, abs_time: bytes, level: tuple[bool, int] | None) -> bytes:
        """The header extension block (with its 4-byte header), or b"" for none."""
        if not self._one_byte:
            return self._extension_slow(abs_time, level)
        variable = self._abs_tag + abs_time if self._abs_tag else b""
        if level is not None and self._level_tag:
            variable += self._level_tag + bytes([(0x80 if level[0] else 0) | level[1] & 0x7F])
        layout = self._layouts.get(len(variable))
        if layout is None:
            size = len(self._fixed) + len(variable)
            if size == 0:
                layout = (b"", b"")
            else:
                pad = -size % 4
                head = struct.pack("!HH", 0xBEDE, (size + pad) // 4) + self._fixed
                layout = (head, b"\0" * pad)
            self._layouts[len(variable)] = layout
        if not layout[0]:
            return b""
        return layout[0] + variable + layout[1]

    def _extension_slow(self, abs_time: bytes, level: tuple[bool, int] | None) -> bytes:
        values: list[tuple[int, bytes]] = [] if self._mid is None else [self._mid]
        if self._abs_tag:
            values.append((self._abs_id, abs_time))
        if level is not None and self._level_tag:
            values.append((self._level_id, bytes([(0x80 if level[0] else 0) | level[1] & 0x7F])))
        profile, value = pack_header_extensions(values)
        return struct.pack("!HH", profile, len(value) // 4) + value if value else b""

    def write(self, data: bytes, sequence_number: int, timestamp: int, ntp: int) -> bool:
        """SRTP-protect and send `data`; False if it could not go out now."""
        assert self._send_rtp is not None
        # `_send_rtp` never waits (UDP sendto underneath): run it to completion here
        # rather than paying a task per packet and viewer.
        step = self._send_rtp(data)
        try:
            step.send(None)
        except StopIteration:
            pass
        except ConnectionError:
            return False
        else:
            step.close()
            self.stalls += 1
            if self.stalls == 1:
                logger.warning("aiortc's RTP send waited: packets to this viewer are dropped")
            return False
        self.history.packets[sequence_number & HISTORY_MASK] = data
        sender = self.sender
        # What the sender's RTCP loop reports (SR) and getStats() counts.
        setattr(sender, _PACKETS, getattr(sender, _PACKETS) + 1)
        setattr(sender, _OCTETS, getattr(sender, _OCTETS) + len(data))
        setattr(sender, _NTP, ntp)
        setattr(sender, _RTP_TS, timestamp)
        return True


class ForwardTrack(MediaStreamTrack):
    """One viewer's copy of a published track, forwarded packet by packet.

    It is the viewer sender's track only so that aiortc's sender loop has
    something to wait on; `recv` returns (raising) when forwarding ends.
    Video starts, and restarts after the source changed SSRC, on a keyframe,
    which it requests from the publisher.
    """

    def __init__(
        self,
        source: PublishedTrack,
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
        self._last: tuple[int, int, float] | None = None  # last (seq, ts, monotonic) sent
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

    def forward(self, packet: RtpPacket, start: bool, abs_time: bytes, ntp: int) -> None:
        """One RTP packet of the source (called on the event loop, for every viewer)."""
        out = self.output
        if out is None or not out.ready:
            return
        seq = packet.sequence_number
        if self._need_start:
            if not start:
                self.dropped += packet.marker
                self.source.request_keyframe()  # again, if the last request got lost
                return
            self._rebase(seq, packet.timestamp, out.clock_rate)
        else:
            age = (seq - self._floor) & 0xFFFF
            if age >= 0x8000:
                return  # from before this viewer started
            if age >= 0x4000:
                self._floor = (seq - 0x2000) & 0xFFFF
        seq = (seq + self._seq_offset) & 0xFFFF
        timestamp = (packet.timestamp + self._ts_offset) & 0xFFFFFFFF
        payload = packet.payload
        ext = out.extension(abs_time, packet.extensions.audio_level)
        first = (0x90 if ext else 0x80) | (0x20 if packet.padding_size else 0)
        data = (
            _HEADER.pack(first, packet.marker << 7 | out.payload_type, seq, timestamp, out.ssrc)
            + ext
            + payload
        )
        if packet.padding_size:
            data += bytes(packet.padding_size - 1) + bytes([packet.padding_size])
        if out.write(data, seq, timestamp, ntp):
            self.packets += 1
            self.bytes += len(payload)
            if packet.marker or self.kind == "audio":
                self.frames += 1
            self._last = (seq, timestamp, time.monotonic())

    def _rebase(self, seq: int, timestamp: int, clock_rate: int) -> None:
        if self._last is None:
            next_seq, next_ts = random.getrandbits(15), random.getrandbits(32)
        else:
            last_seq, last_ts, last_at = self._last
            elapsed = max(1, int((time.monotonic() - last_at) * clock_rate))
            next_seq, next_ts = last_seq + 1, last_ts + elapsed
        self._seq_offset = (next_seq - seq) & 0xFFFF
        self._ts_offset = (next_ts - timestamp) & 0xFFFFFFFF
        self._floor = seq
        self._need_start = False

    def on_end(self, track: PublishedTrack) -> None:
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
