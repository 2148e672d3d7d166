"""A selective forwarding unit on aiortc: encoded media in, the same media out.

One `Forwarder` owns the peer connections of a media shard, all on one
asyncio loop. `publish` answers a WHIP offer, `subscribe` a WHEP offer that
watches published sessions (a proctor watching a candidate, or a candidate
hearing a proctor's talk-back). Media is forwarded at the RTP level, never
decoded, re-encoded or re-packetized on the way; see `actors.media.aiortc.rtc` for how
aiortc is made to do that, `actors.media.fanout` for the per-track fan-out,
`actors.media.rtp_forward` for the per-viewer rewrite, `actors.media.recording` and
`actors.media.frame_sampler` for the consumers of whole published frames.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

from aiortc import RTCSessionDescription

from actors.media import codec_choice, sdp, trickle
from actors.media.aiortc import rtc
from actors.media.aiortc.udp_mux import UdpMux
from actors.media.fanout import ForwardTrack, PublishedTrack
from actors.media.frame_sampler import FrameSampler, SampleCallback
from actors.media.recording import Recorder, SegmentSink
from actors.media.session import PublishSession, Session, ViewSession
from actors.media.tag import PROBE, Source
from infra.errors import (
    Conflict,
    ExamdayError,
    InvalidInput,
    MalformedInput,
    NotFound,
    Unavailable,
)
from infra.settings.media import MediaSettings

logger = logging.getLogger(__name__)


class Forwarder:
    """The SFU of one media shard. Create, use and close it on one event loop."""

    def __init__(
        self,
        settings: MediaSettings,
        *,
        segment_sink: SegmentSink | None = None,
        on_sample: SampleCallback | None = None,
    ) -> None:
        self.settings = settings
        self._sessions: dict[str, Session] = {}
        self._totals: Counter[str] = Counter()
        self._allow = trickle.address_filter(settings.allowed_remote_networks)
        self._segment_sink = segment_sink if settings.recording_enabled else None
        self._sampler = (
            FrameSampler(on_sample, interval_s=settings.sample_interval_s) if on_sample else None
        )
        self._closed = False
        self.peer_connections_created = 0
        self._muxes: dict[str, UdpMux] = {}  # host address -> the shard's port on it
        self._muxes_opening = asyncio.Lock()
        rtc.install(shared_rtcp_ticks=True)  # this process serves media: one wakeup, many reports

    @property
    def live_peer_connections(self) -> int:
        return len(self._sessions)

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    @property
    def muxes(self) -> dict[str, UdpMux]:
        """The shard's UDP ports (`udp_port`), by host address; empty with one per connection."""
        return dict(self._muxes)

    async def start(self) -> None:
        """Bind the shard's UDP port(s) when `udp_port` asks for one (idempotent).

        `publish` and `subscribe` call it too; a shard calls it as it starts, so a
        port it cannot have fails the start rather than the first session.
        """
        if not self.settings.udp_port or self._muxes:
            return
        async with self._muxes_opening:
            if self._muxes or self._closed:
                return
            announced = self.settings.announced()
            opened: dict[str, UdpMux] = {}
            try:
                for address in self.settings.host_addresses:
                    opened[address] = await UdpMux.open(
                        address,
                        port=self.settings.udp_port,
                        span=self.settings.udp_port_span,
                        announced=announced.get(address),
                        batch_reads=self.settings.udp_batch_reads,
                    )
            except OSError as exc:
                for mux in opened.values():
                    await mux.close()
                raise Unavailable(
                    f"cannot bind the media UDP port: {exc}",
                    reason="media_port_unavailable",
                    retry_after=self.settings.retry_after_s,
                ) from exc
            self._muxes = opened

    def session(self, session_id: str) -> Session:
        if session_id not in self._sessions:
            raise NotFound(f"no media session {session_id}", reason="unknown_session")
        return self._sessions[session_id]

    async def publish(
        self,
        offer_sdp: str,
        *,
        content_type: str | None = sdp.SDP_TYPE,
        source: Source = "camera",
        session_id: str | None = None,
    ) -> tuple[str, PublishSession]:
        """Answer a WHIP offer; returns (answer SDP, session)."""
        offer = self._parse(offer_sdp, content_type)
        sdp.check_publish(offer)
        prefs = [self._preferences(media) for media in offer.media]
        await self.start()
        pc = self._allocate(session_id)
        session = PublishSession(session_id or uuid.uuid4().hex, pc, offer, source)
        self._sessions[session.id] = session
        try:
            for media, codecs in zip(offer.media, prefs, strict=True):
                pc.addTransceiver(media.kind, direction="recvonly").setCodecPreferences(codecs)
            await self._apply(session, offer)
            interval = self.settings.keyframe_request_interval_s
            for media, transceiver, codecs in zip(
                offer.media, pc.getTransceivers(), prefs, strict=True
            ):
                track = session.receive(media, transceiver, codecs[0], interval)
                rtc.tap_rtp(transceiver.receiver, track.on_rtp)
            answer = await self._answer(session)
        except BaseException:
            await self.close_session(session.id)
            raise
        if source == PROBE:
            # A probe only lets the browser measure its link: bounded, whatever the client does.
            self._spawn(session, self._end_probe(session))
        else:
            self._consume(session)
        return answer, session

    async def subscribe(
        self,
        offer_sdp: str,
        sources: Sequence[str],
        *,
        content_type: str | None = sdp.SDP_TYPE,
        session_id: str | None = None,
    ) -> tuple[str, ViewSession]:
        """Answer a WHEP offer watching `sources` (publisher session ids), m-lines in order."""
        offer = self._parse(offer_sdp, content_type)
        sdp.check_subscribe(offer, max_tracks=self.settings.max_subscribe_tracks)
        plan = self._assign(offer, sources)
        await self.start()
        pc = self._allocate(session_id)
        session = ViewSession(session_id or uuid.uuid4().hex, pc, offer, sources)
        self._sessions[session.id] = session
        try:
            for media, (source, codecs) in zip(offer.media, plan, strict=True):
                if source is None:
                    pc.addTransceiver(media.kind, direction="inactive")
                    continue
                track = ForwardTrack(
                    source, on_source_end=functools.partial(self._source_ended, session)
                )
                session.send(track, codecs)
                track.attach(pc.getTransceivers()[-1].sender)
            await self._apply(session, offer)
            answer = await self._answer(session)
        except BaseException as exc:
            ended_meanwhile = session.closed
            await self.close_session(session.id)
            if ended_meanwhile and isinstance(exc, Exception):
                # Every watched source ended while the answer was made (its publisher
                # left), and took this session with it.
                raise NotFound("the watched session ended", reason="not_publishing") from exc
            raise
        return answer, session

    async def patch(
        self, session_id: str, fragment: str, *, content_type: str | None = trickle.TRICKLE_TYPE
    ) -> str | None:
        """Trickle ICE (WHIP/WHEP PATCH): add the remote candidates of `fragment`.

        A fragment with new ICE credentials restarts ICE (RFC 9725 section 4.3.2) and
        returns the fragment to answer with (our new credentials and candidates); a
        plain trickle returns None.
        """
        session = self.session(session_id)
        sdp.check_content_type(content_type, trickle.TRICKLE_TYPE)
        frag = trickle.parse_fragment(
            fragment,
            max_bytes=self.settings.max_sdp_bytes,
            max_candidates=self.settings.max_patch_candidates,
        )
        if frag.is_restart(session.remote_ufrag, session.remote_pwd):
            return await self._restart_ice(session, frag)
        await self._add_candidates(session, frag)
        return None

    async def _restart_ice(self, session: Session, frag: trickle.IceFragment) -> str:
        """Restart ICE under the session's DTLS association: its SRTP, its tracks, its
        viewers and its recording go on; media moves to the new pair once one is nominated
        (`actors.media.aiortc.ice_restart`)."""
        ufrag, pwd = frag.restart_credentials()
        if session.pc.connectionState != "connected":
            raise Conflict("ICE restarts only once connected", reason="not_connected")
        if session.ice_restart is not None:  # a newer restart replaces one still checking
            session.ice_restart.cancel()
        restart = rtc.ice_restart(session.pc)
        local_ufrag, local_pwd = await restart.begin()
        restart.remote(ufrag, pwd)
        session.remote_ufrag, session.remote_pwd = ufrag, pwd
        await self._add_candidates(session, frag)
        self._totals["ice_restarts"] += 1
        session.ice_restart = self._spawn(session, self._run_restart(session, restart))
        candidates = [c.to_sdp() for c in restart.local_candidates]
        return trickle.ice_fragment(local_ufrag, local_pwd, session.bundle_mid, candidates)

    async def _run_restart(self, session: Session, restart: rtc.IceRestart) -> None:
        if not await restart.run(self.settings.connect_timeout_s):
            self._totals["ice_restarts_failed"] += 1
            logger.info("media session %s: its ICE restart found no new pair", session.id)
        if session.ice_restart is asyncio.current_task():
            session.ice_restart = None

    async def _add_candidates(self, session: Session, frag: trickle.IceFragment) -> None:
        for item in frag.candidates:
            if not self._allow(trickle.candidate_address(item.candidate)):
                continue
            # aiortc drops candidates aimed at a bundled m-line: use the bundle's own.
            candidate = rtc.remote_candidate(item.candidate, session.bundle_mid)
            await session.pc.addIceCandidate(candidate)
        if frag.end_of_candidates:
            await session.pc.addIceCandidate(None)

    async def close_session(self, session_id: str) -> None:
        """End a session (WHIP/WHEP DELETE); a publisher's viewers see its tracks end."""
        session = self._sessions.get(session_id)
        if session is None:
            return
        if session.closed:
            await session.done.wait()
            return
        session.closed = True
        current = asyncio.current_task()
        for task in session.tasks:
            if task is not current:
                task.cancel()
        try:
            await session.release()
        finally:
            self._totals.update(session.counters())
            del self._sessions[session_id]
            session.done.set()

    async def close(self) -> None:
        """Close every session, publishers first so recordings flush."""
        self._closed = True
        ordered = sorted(self._sessions.values(), key=lambda s: not isinstance(s, PublishSession))
        for session in ordered:
            await self.close_session(session.id)
        if self._sampler is not None:
            await self._sampler.close()
        muxes, self._muxes = self._muxes, {}
        for mux in muxes.values():
            await mux.close()

    async def stats(self) -> dict[str, int]:
        """Counters since start; `decodes` and `encodes` stay 0 unless sampling decodes."""
        counts = Counter(self._totals)
        for session in self._sessions.values():
            counts.update(session.counters())
            if isinstance(session, ViewSession):
                counts["rtp_retransmissions"] += sum(t.retransmissions for t in session.tracks)
        counts["decodes"] += self._sampler.decodes if self._sampler else 0
        counts["samples"] += self._sampler.samples if self._sampler else 0
        counts["encodes"] += 0  # reported even when zero: the point of forwarding
        counts["live_sessions"] = len(self._sessions)
        for mux in self._muxes.values():
            counts.update({f"udp_mux_{name}": n for name, n in mux.counts.items()})
        counts["peer_connections_created"] = self.peer_connections_created
        return dict(counts)

    def _parse(self, offer_sdp: str, content_type: str | None) -> sdp.Offer:
        if self._closed:
            raise Unavailable("the media shard is closing", reason="shard_closing", retry_after=1)
        sdp.check_content_type(content_type, sdp.SDP_TYPE)
        return sdp.parse_offer(
            offer_sdp,
            max_bytes=self.settings.max_sdp_bytes,
            max_candidates=self.settings.max_offer_candidates,
        )

    def _preferences(self, media: sdp.MediaSection) -> list[Any]:
        video = media.kind == "video"
        allowed = self.settings.video_codecs if video else self.settings.audio_codecs
        codecs = codec_choice.codec_preferences(media.kind, media.codecs, allowed)
        if not codecs:
            raise InvalidInput(
                f"no {media.kind} codec we forward ({', '.join(allowed)})",
                reason="unsupported_codec",
            )
        return codecs

    def _assign(
        self, offer: sdp.Offer, sources: Sequence[str]
    ) -> list[tuple[PublishedTrack | None, list[Any]]]:
        available: list[PublishedTrack] = []
        for source_id in sources:
            session = self._sessions.get(source_id)
            # A probe is nobody's to watch, whoever names its session.
            if not isinstance(session, PublishSession) or session.source == PROBE:
                raise NotFound(f"nothing published as {source_id}", reason="unknown_session")
            available += [t for t in session.tracks.values() if not t.ended]
        plan: list[tuple[PublishedTrack | None, list[Any]]] = []
        for media in offer.media:
            track = next((t for t in available if t.kind == media.kind), None)
            if track is None:
                plan.append((None, []))
                continue
            available.remove(track)
            codecs = codec_choice.codec_preferences(media.kind, media.codecs, [track.codec_name])
            if not codecs or codecs[0].mimeType.lower() != track.codec.mimeType.lower():
                raise InvalidInput(
                    f"the viewer does not accept {track.codec.mimeType}", reason="codec_mismatch"
                )
            plan.append((track, codecs))
        if all(track is None for track, _ in plan):
            raise InvalidInput("nothing to send for this offer", reason="no_tracks")
        return plan

    def _allocate(self, session_id: str | None) -> rtc.ScopedPeerConnection:
        if session_id is not None and session_id in self._sessions:
            raise Conflict(f"media session {session_id} exists", reason="session_exists")
        if len(self._sessions) >= self.settings.max_sessions:
            raise Unavailable(
                "this media shard is full",
                reason="shard_full",
                retry_after=self.settings.retry_after_s,
            )
        self.peer_connections_created += 1
        return rtc.ScopedPeerConnection(
            self.settings.host_addresses, announced=self.settings.announced(), muxes=self._muxes
        )

    async def _apply(self, session: Session, offer: sdp.Offer) -> None:
        text = trickle.drop_candidates(offer.text, self._allow)
        if isinstance(session, ViewSession):
            text = sdp.without_bandwidth_feedback(text)
        try:
            await session.pc.setRemoteDescription(RTCSessionDescription(sdp=text, type="offer"))
        except ExamdayError:
            raise
        except Exception as exc:  # aiortc's parser found what ours let through
            raise MalformedInput(f"malformed SDP: {exc}", reason="malformed_sdp") from exc

    async def _answer(self, session: Session) -> str:
        await session.pc.setLocalDescription(await session.pc.createAnswer())

        @session.pc.on("connectionstatechange")
        def _state_changed() -> None:
            state = session.pc.connectionState
            if state in ("failed", "closed"):
                if not session.closed:
                    logger.info(
                        "media %s session %s connection %s (ICE %s)",
                        "publish" if isinstance(session, PublishSession) else "view",
                        session.id,
                        state,
                        session.pc.iceConnectionState,
                    )
                self._spawn(session, self.close_session(session.id))

        self._spawn(session, self._expire(session))
        return str(session.pc.localDescription.sdp)

    def _consume(self, session: PublishSession) -> None:
        sampler = self._sampler if session.source in self.settings.sampled_sources else None
        if self._segment_sink is not None and session.source in self.settings.recorded_sources:
            session.recorder = Recorder(
                session.id,
                session.source,
                self._segment_sink,
                segment_seconds=self.settings.segment_seconds,
            )
        for track in session.tracks.values():
            if session.recorder is not None:
                session.recorder.watch(track)
            if sampler is not None:
                sampler.watch(track)

    def _source_ended(self, session: ViewSession, track: ForwardTrack) -> None:
        if session.closed:
            return
        if all(t.source.ended for t in session.tracks):
            self._spawn(session, self.close_session(session.id))
            return
        for transceiver in session.pc.getTransceivers():
            if transceiver.sender.track is track:
                self._spawn(session, transceiver.sender.stop())  # RTCP BYE ends it remotely

    async def _end_probe(self, session: Session) -> None:
        await asyncio.sleep(self.settings.probe_seconds)
        self._totals["probes_ended"] += 1
        await self.close_session(session.id)

    async def _expire(self, session: Session) -> None:
        await asyncio.sleep(self.settings.connect_timeout_s)
        if session.pc.connectionState != "connected":
            logger.info(
                "media session %s never connected (connection %s, ICE %s, packets in %d)",
                session.id,
                session.pc.connectionState,
                session.pc.iceConnectionState,
                sum(t.packets_in for t in session.tracks.values())
                if isinstance(session, PublishSession)
                else 0,
            )
            await self.close_session(session.id)

    def _spawn(self, session: Session, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        session.tasks.add(task)
        task.add_done_callback(session.tasks.discard)
        return task
