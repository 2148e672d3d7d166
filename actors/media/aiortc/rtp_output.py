"""A viewer sender's RTP output, driven packet by packet from outside its RTP loop.

`RtpOutput` writes finished RTP packets as the viewer's `RTCRtpSender` would
have: with its SSRC, negotiated payload type and header extensions, SRTP-
protected and sent as its DTLS transport's `_send_rtp` would, into the history
its NACK handler reads, and into the counters its RTCP loop puts into sender
reports. These are aiortc internals, named in `actors.media.aiortc.rtc.PRIVATE_API` and
checked by `missing_private_api()`; they are used here, on the per-packet
path, rather than behind a call in `actors.media.aiortc.rtc`, because every call there is
paid per packet and viewer. For the same reason a packet does not go through
`_send_rtp` itself: five coroutine layers (DTLS, ICE transport, aioice's
connection and protocol) that end in one SRTP call and one `sendto` cost more
than those two (`examday bench media`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from aiortc import RTCRtpSender
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtp import RTP_HISTORY_SIZE, HeaderExtensionsMap, RtpPacket, pack_header_extensions

from actors.media.aiortc.rtc import PRIVATE_API

URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
HISTORY_MASK = RTP_HISTORY_SIZE - 1
_SSRC = PRIVATE_API["sender_ssrc"]
_HISTORY = PRIVATE_API["sender_rtp_history"]
_PACKETS = PRIVATE_API["sender_packet_count"]
_OCTETS = PRIVATE_API["sender_octet_count"]
_NTP = PRIVATE_API["sender_ntp_timestamp"]
_RTP_TS = PRIVATE_API["sender_rtp_timestamp"]
_DTLS_STATE = PRIVATE_API["transport_state"]
_TX_SRTP = PRIVATE_API["transport_tx_srtp"]
_TX_PACKETS = PRIVATE_API["transport_tx_packets"]
_TX_BYTES = PRIVATE_API["transport_tx_bytes"]
_ICE_CONNECTION = PRIVATE_API["ice_connection"]
_NOMINATED = PRIVATE_API["ice_nominated"]
_RTP_COMPONENT = 1
_CONNECTED = DtlsState.CONNECTED

assert RTP_HISTORY_SIZE & HISTORY_MASK == 0, "the history is indexed by masking"


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
        self._dtls: Any = None
        self._srtp: Any = None  # the DTLS transport's outgoing SRTP session
        self._pairs: dict[int, Any] = {}  # aioice's nominated candidate pairs
        self._unreported_packets = 0  # sent, not yet counted in the transport's stats
        self._unreported_bytes = 0
        self._abs_tag = b""
        self._level_tag = b""
        self._mid: tuple[int, bytes] | None = None
        self._abs_id = 0
        self._level_id = 0
        self._one_byte = True
        self._fixed = b""
        self._layouts: dict[int, tuple[bytes, bytes]] = {}
        self.layout: tuple[bytes, bytes, bytes, bool] = (b"", b"", b"", True)
        self._on_ready = on_ready
        setattr(sender, _HISTORY, self.history)
        original = sender.send

        async def send(parameters: Any) -> None:
            self._configure(parameters)
            await original(parameters)
            dtls = sender.transport
            self._dtls, self._srtp = dtls, getattr(dtls, _TX_SRTP)
            self._pairs = getattr(getattr(dtls.transport, _ICE_CONNECTION), _NOMINATED)
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
        # Viewers with equal keys get equal extension blocks for the same packet.
        self.layout = (self._fixed, self._abs_tag, self._level_tag, one_byte)

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

    def write(self, data: bytes, sequence_number: int) -> bool:
        """SRTP-protect and send `data`; False if it cannot go out (not connected)."""
        pair = self._pairs.get(_RTP_COMPONENT)  # gone once aioice closes
        if pair is None or getattr(self._dtls, _DTLS_STATE) is not _CONNECTED:
            return False
        protected = self._srtp.protect(data)
        pair.protocol.transport.sendto(protected, pair.remote_addr)
        self._unreported_packets += 1
        self._unreported_bytes += len(protected)
        self.history.packets[sequence_number & HISTORY_MASK] = data
        return True

    def report(self, packets: int, octets: int, ntp: int, timestamp: int) -> None:
        """Tell the sender what went out, for its sender reports (SR) and getStats()."""
        sender = self.sender
        setattr(sender, _PACKETS, getattr(sender, _PACKETS) + packets)
        setattr(sender, _OCTETS, getattr(sender, _OCTETS) + octets)
        setattr(sender, _NTP, ntp)
        setattr(sender, _RTP_TS, timestamp)
        dtls = self._dtls
        setattr(dtls, _TX_PACKETS, getattr(dtls, _TX_PACKETS) + self._unreported_packets)
        setattr(dtls, _TX_BYTES, getattr(dtls, _TX_BYTES) + self._unreported_bytes)
        self._unreported_packets = self._unreported_bytes = 0
