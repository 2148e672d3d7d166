"""The sessions of a `Forwarder`: one peer connection each, with its counters."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from typing import Any

from actors.media import sdp
from actors.media.aiortc import rtc
from actors.media.fanout import ForwardTrack, PublishedTrack
from actors.media.recording import Recorder


class Session:
    """One peer connection: a publisher's (WHIP) or a viewer's (WHEP)."""

    def __init__(self, session_id: str, pc: rtc.ScopedPeerConnection, offer: sdp.Offer) -> None:
        self.id = session_id
        self.pc = pc
        self.remote_ufrag = offer.ice_ufrag
        self.remote_pwd = offer.ice_pwd
        self.bundle_mid = offer.bundle[0]  # every candidate belongs to the bundle's transport
        self.tasks: set[asyncio.Task[Any]] = set()
        self.ice_restart: asyncio.Task[Any] | None = None  # an ICE restart still checking
        self.closed = False  # closing began
        self.done = asyncio.Event()  # closing ended

    @property
    def connection_state(self) -> str:
        return str(self.pc.connectionState)

    def counters(self) -> Counter[str]:
        return Counter()

    async def release(self) -> None:
        await self.pc.close()


class PublishSession(Session):
    def __init__(self, session_id: str, pc: Any, offer: sdp.Offer, source: str) -> None:
        super().__init__(session_id, pc, offer)
        self.source = source
        self.tracks: dict[str, PublishedTrack] = {}
        self.recorder: Recorder | None = None

    def receive(
        self, media: sdp.MediaSection, transceiver: Any, codec: Any, keyframe_interval_s: float
    ) -> PublishedTrack:
        """Publish what `transceiver` receives, still encoded, as a `PublishedTrack`."""
        receiver = transceiver.receiver

        async def send_pli() -> None:
            ssrc = media.ssrcs[0] if media.ssrcs else rtc.receiving_ssrc(receiver)
            if ssrc is not None:
                await rtc.request_keyframe(receiver, ssrc)

        track = PublishedTrack(
            session_id=self.id,
            source=self.source,
            kind=media.kind,
            codec=codec,
            send_pli=send_pli,
            keyframe_interval_s=keyframe_interval_s,
        )
        rtc.tap_receiver(receiver, lambda _, f: track.push(f.data, f.timestamp), track.end)
        self.tracks[media.kind] = track
        return track

    async def release(self) -> None:
        for track in self.tracks.values():
            track.end()
        if self.recorder is not None:
            await self.recorder.close()  # flush the partial segment
        await self.pc.close()

    def counters(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for track in self.tracks.values():
            counts["frames_received"] += track.frames_in
            counts["keyframe_requests_sent"] += track.keyframe_requests_sent
        if self.recorder is not None:
            counts["segments_recorded"] += self.recorder.segments
            counts["segments_failed"] += self.recorder.failures
        return counts


class ViewSession(Session):
    def __init__(self, session_id: str, pc: Any, offer: sdp.Offer, sources: Sequence[str]) -> None:
        super().__init__(session_id, pc, offer)
        self.sources = tuple(sources)
        self.tracks: list[ForwardTrack] = []
        self.encoders: list[rtc.PackOnlyEncoder] = []
        self.rtp_packets = 0

    def send(self, track: ForwardTrack, codecs: list[Any]) -> None:
        """Send `track` on a new transceiver, packetized as `codecs[0]`, never encoded."""
        transceiver = self.pc.addTransceiver(track, direction="sendonly")
        transceiver.setCodecPreferences(codecs)
        self.encoders.append(rtc.install_pack_only_encoder(transceiver.sender, codecs[0]))
        rtc.on_keyframe_request(transceiver.sender, track.on_keyframe_request)
        self.tracks.append(track)

    async def release(self) -> None:
        for track in self.tracks:
            track.stop()
        for transceiver in self.pc.getTransceivers():
            stats = await transceiver.sender.getStats()
            self.rtp_packets += sum(
                getattr(s, "packetsSent", 0) for s in stats.values() if s.type == "outbound-rtp"
            )
        await self.pc.close()

    def counters(self) -> Counter[str]:
        counts: Counter[str] = Counter(rtp_packets_forwarded=self.rtp_packets)
        for track in self.tracks:
            counts["frames_forwarded"] += track.frames
            counts["bytes_forwarded"] += track.bytes
            counts["frames_dropped"] += track.dropped
            counts["keyframe_requests_relayed"] += track.keyframe_requests
        counts["encodes"] += sum(e.encodes for e in self.encoders)
        return counts
