"""Every aiortc/aioice detail beyond the public API that examday relies on.

aiortc has no public way to forward encoded media, so the forwarder reaches
into a few private parts. They are named once, in `PRIVATE_API`
(`actors.media.aiortc.private_api`), used only in this package: this module,
`actors.media.aiortc.rtp_output` (the per-packet send path) and
`actors.media.aiortc.ice_consent` (aioice's consent loop, replaced), and
`missing_private_api()` (run by tests/media and at shard start) reports any an
upgrade removed, so a broken upgrade fails a test rather than production.
What is swapped process-wide is swapped by one call, `install`.

- RTP in: `RTCRtpReceiver._handle_rtp_packet` passes every packet it accepts
  (SRTP unprotected, RTX unwrapped, NACKs for gaps already sent upstream) to
  its jitter buffer's `add(packet) -> (pli, frame)`. `tap_rtp` puts an
  `RtpTap` in the buffer's place: packets go to a callback first, and to the
  real buffer only while someone wants whole frames.
- RTP out (`actors.media.aiortc.rtp_output`): a viewer's packets are written with the
  sender's SSRC `_ssrc`, kept in the sender's `__rtp_history`, which its NACK
  handler `_retransmit` reads, and counted in the `__packet_count`,
  `__octet_count`, `__ntp_timestamp` and `__rtp_timestamp` its RTCP loop puts
  into sender reports. They go out as the DTLS transport's `_send_rtp` sends
  them, without its coroutine layers: while its `_state` is CONNECTED,
  protected by its SRTP session `_tx_srtp` and sent to the nominated pair of
  its ICE transport's aioice connection (`_connection._nominated[1]`),
  counted in its `__tx_packets` and `__tx_bytes`.
- Frames (recording, sampling): `RTCRtpReceiver` hands each complete frame from its
  jitter buffer to `decoder_queue.put((codec, JitterFrame))`, and its decoder
  thread runs `decoder_worker`, which loops on `decoder_queue.get()` until it
  reads `None`. `tap_receiver` swaps that queue for an `EncodedFrameTap` before
  the receiver starts: frames go to a callback on the event loop and the
  decoder thread idles, never decoding, until the receiver stops.
- Keyframes: `_send_rtcp_pli(ssrc)` sends a PLI to the publisher; a sender
  answers PLI/FIR from its viewer by calling its own `_send_keyframe()`, which
  `on_keyframe_request` replaces with a relay callback.
- No encoding: a viewer's sender never gets a frame (its track idles while
  `actors.media.aiortc.rtp_output` writes for it), and the encoder slot it keeps in
  `__encoder` is preset to a `PackOnlyEncoder` that counts any encode, so "no
  encode" is measured rather than assumed.
- Signalling helpers that aiortc has but does not document (`aiortc.sdp.
  candidate_from_sdp`, `aiortc.codecs.get_encoder`) are imported here only, so
  a rename fails at import, in every test.
- ICE: aioice gathers host candidates from `aioice.ice.get_host_addresses()`,
  on every interface. `ScopedPeerConnection` makes that function return its own
  address list while it gathers (a context variable, so other connections in
  the process are untouched); aiortc gathers in `setLocalDescription` only.
  The same context carries what the candidates announce (`announced`: a
  host address -> the address put into the SDP, a node's public one) and the
  shard's `UdpMux`es (`actors.media.aiortc.udp_mux`, one UDP port per shard):
  aioice's `Connection.get_component_candidates` (`install` wraps it) then
  binds no socket for a host address that has a mux, but attaches the
  connection to the mux (a `StunProtocol` subclass in `_protocols`, non-STUN
  datagrams handed to the connection's `data_received`; a ufrag another live
  connection of the mux holds is redrawn in `_local_username`), and rewrites
  the host candidates it did bind to their announced address.
- RTCP timing: aiortc's sender and receiver loops wait
  `asyncio.sleep(0.5 + random.random())` between reports, `random` being
  their module's import; `actors.media.aiortc.rtcp_ticks` puts a stand-in there that ends
  each wait on a shared tick, once a `Forwarder` has called
  `install(shared_rtcp_ticks=True)` (clients, such as the load tester's, keep
  aiortc's timing, as browsers do).
- ICE consent: aioice's `Connection.query_consent` gives up on a connection
  after six half-second checks in a row go unanswered; `actors.media.aiortc.ice_consent`
  puts RFC 7675's 30 s in its place (`install`, which every
  `ScopedPeerConnection` calls).
- ICE restart: aiortc has none; `actors.media.aiortc.ice_restart` restarts
  ICE inside a connected peer's aioice `Connection` (new credentials, a new
  check list, the DTLS association untouched), through the `ice_restart_*`
  names; `ice_restart(pc)` gives one.
- Tests watch and disturb real peers only through the hooks here:
  `tap_rtcp` (the RTCP a sender or receiver sends, `_send_rtcp`),
  `filter_incoming_rtp` (a lossy link: the DTLS transport's
  `_handle_rtp_data`), `keyframe_requests_ignored` (a publisher that answers
  no PLI for a while) and `stun_protocols` (an ICE peer's STUN transports,
  aioice's `_protocols`).

Names are checked by `missing_private_api`; the behaviour behind them (packets
and frames reach the taps, viewers decode what is written for them, NACKs are
answered from the history, PLI reaches the hook, answers carry only allowed
addresses) by the forwarding, RTP forwarding and ICE tests in tests/media.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import aioice
import aioice.ice
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
from aioice.candidate import candidate_foundation
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCDtlsTransport,
    RTCIceCandidate,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
)
from aiortc.codecs import get_encoder
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.sdp import candidate_from_sdp

from actors.media.aiortc import ice_consent, rtcp_ticks
from actors.media.aiortc.ice_restart import IceRestart as IceRestart
from actors.media.aiortc.private_api import PRIVATE_API as PRIVATE_API
from actors.media.aiortc.udp_mux import UdpMux
from infra.errors import ConfigError

logger = logging.getLogger(__name__)

DECODER_WORKER_PARAMS: Final = ("loop", "input_q", "output_q", "decode_error")
RTCP_WAIT: Final = f"asyncio.sleep({rtcp_ticks.BASE_INTERVAL_S} + random.random())"
RTCP_LOOPS: Final = (
    ("sender_rtcp_random", aiortc.rtcrtpsender, RTCRtpSender),
    ("receiver_rtcp_random", aiortc.rtcrtpreceiver, RTCRtpReceiver),
)
SENDER_COUNTERS: Final = (
    "sender_packet_count",
    "sender_octet_count",
    "sender_ntp_timestamp",
    "sender_rtp_timestamp",
)

_HOST_ADDRESSES: Final[contextvars.ContextVar[tuple[str, ...] | None]] = contextvars.ContextVar(
    "examday_ice_host_addresses", default=None
)
COMPONENT_CANDIDATES_PARAMS: Final = ("self", "component", "addresses", "timeout")
STUN_REQUEST_PARAMS: Final = ("self", "request", "addr", "integrity_key", "retransmissions")


@dataclass(frozen=True)
class GatheringPlan:
    """How a `ScopedPeerConnection` gathers beyond its host addresses."""

    announced: Mapping[str, str] = field(default_factory=dict)  # host address -> in the SDP
    muxes: Mapping[str, UdpMux] = field(default_factory=dict)  # host address -> its shared port


_GATHERING: Final[contextvars.ContextVar[GatheringPlan | None]] = contextvars.ContextVar(
    "examday_ice_gathering", default=None
)


async def missing_private_api() -> list[str]:
    """Names in `PRIVATE_API` this aiortc/aioice no longer has (empty when all is well)."""
    missing = []
    worker = getattr(aiortc.rtcrtpreceiver, PRIVATE_API["receiver_decoder_worker"], None)
    if worker is None or tuple(inspect.signature(worker).parameters) != DECODER_WORKER_PARAMS:
        missing.append("receiver_decoder_worker")
    if not callable(getattr(aioice.ice, PRIVATE_API["host_addresses"], None)):
        missing.append("host_addresses")
    consent_check = getattr(aioice.ice.Connection, PRIVATE_API["consent_check"], None)
    if not inspect.iscoroutinefunction(consent_check):
        missing.append("consent_check")
    missing += _missing_mux_api()
    for name, module, owner in RTCP_LOOPS:
        draw = getattr(getattr(module, PRIVATE_API[name], None), "random", None)
        loop = getattr(owner, PRIVATE_API["rtcp_loop"], None)
        if not callable(draw) or RTCP_WAIT not in _source(loop):
            missing.append(name)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        transceiver = pc.addTransceiver("video")
        receiver, sender = transceiver.receiver, transceiver.sender
        queue = getattr(receiver, PRIVATE_API["receiver_decoder_queue"], None)
        if not (hasattr(queue, "put") and hasattr(queue, "get")):
            missing.append("receiver_decoder_queue")
        if not callable(getattr(receiver, PRIVATE_API["receiver_send_pli"], None)):
            missing.append("receiver_send_pli")
        if not callable(getattr(sender, PRIVATE_API["sender_keyframe_hook"], None)):
            missing.append("sender_keyframe_hook")
        if not hasattr(sender, PRIVATE_API["sender_encoder"]):
            missing.append("sender_encoder")
        if not all(
            callable(getattr(o, PRIVATE_API["rtcp_send"], None)) for o in (receiver, sender)
        ):
            missing.append("rtcp_send")
        missing += _missing_rtp_api(receiver, sender)
    finally:
        await pc.close()
    return missing


def _params(function: object) -> tuple[str, ...]:
    function = inspect.unwrap(function)  # type: ignore[arg-type]
    try:
        return tuple(inspect.signature(function).parameters)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ()


def _missing_mux_api() -> list[str]:
    """What `udp_mux` needs of aioice's classes (their instances are checked with the pc's)."""
    missing = []
    gather = getattr(aioice.ice.Connection, PRIVATE_API["ice_component_candidates"], None)
    gather = getattr(gather, "examday_original", gather)
    if not inspect.iscoroutinefunction(gather) or _params(gather) != COMPONENT_CANDIDATES_PARAMS:
        missing.append("ice_component_candidates")
    if not callable(getattr(aioice.ice.Connection, PRIVATE_API["ice_data_in"], None)):
        missing.append("ice_data_in")
    protocol = getattr(aioice.ice, PRIVATE_API["stun_protocol"], None)
    if not (
        isinstance(protocol, type)
        and _params(protocol) == ("receiver",)
        and _params(getattr(protocol, "request", None)) == STUN_REQUEST_PARAMS
        and inspect.iscoroutinefunction(getattr(protocol, "close", None))
        and all(
            callable(getattr(protocol, name, None))
            for name in ("connection_made", "connection_lost", "datagram_received")
        )
    ):
        missing.append("stun_protocol")
    return missing


def _source(function: object) -> str:
    try:
        return inspect.getsource(function)  # type: ignore[arg-type]
    except (OSError, TypeError):  # not a function, or installed without its source
        return ""


def _missing_rtp_api(receiver: RTCRtpReceiver, sender: RTCRtpSender) -> list[str]:
    missing = []
    buffer = getattr(receiver, PRIVATE_API["receiver_jitter_buffer"], None)
    if not callable(getattr(buffer, "add", None)):
        missing.append("receiver_jitter_buffer")
    if not isinstance(getattr(sender, PRIVATE_API["sender_ssrc"], None), int):
        missing.append("sender_ssrc")
    if not isinstance(getattr(sender, PRIVATE_API["sender_rtp_history"], None), dict):
        missing.append("sender_rtp_history")
    if not callable(getattr(sender, PRIVATE_API["sender_retransmit"], None)):
        missing.append("sender_retransmit")
    for name in SENDER_COUNTERS:
        if not isinstance(getattr(sender, PRIVATE_API[name], None), int):
            missing.append(name)
    return missing + _missing_transport_api(sender.transport)


def _missing_transport_api(dtls: RTCDtlsTransport) -> list[str]:
    missing = []
    if not isinstance(getattr(dtls, PRIVATE_API["transport_state"], None), DtlsState):
        missing.append("transport_state")
    if not hasattr(dtls, PRIVATE_API["transport_tx_srtp"]):
        missing.append("transport_tx_srtp")
    for name in ("transport_tx_packets", "transport_tx_bytes"):
        if not isinstance(getattr(dtls, PRIVATE_API[name], None), int):
            missing.append(name)
    if not callable(getattr(dtls, PRIVATE_API["transport_rtp_in"], None)):
        missing.append("transport_rtp_in")
    connection = getattr(dtls.transport, PRIVATE_API["ice_connection"], None)
    if not isinstance(connection, aioice.ice.Connection):
        return [*missing, "ice_connection"]
    if not isinstance(getattr(connection, PRIVATE_API["ice_nominated"], None), dict):
        missing.append("ice_nominated")
    if not isinstance(getattr(connection, PRIVATE_API["ice_protocols"], None), list):
        missing.append("ice_protocols")
    if not hasattr(connection, PRIVATE_API["ice_consent_task"]):
        missing.append("ice_consent_task")
    username = getattr(connection, PRIVATE_API["ice_local_username"], None)
    if not isinstance(username, str) or username != connection.local_username:
        missing.append("ice_local_username")
    return missing + missing_restart_api(connection, dtls.transport.iceGatherer)


RESTART_ATTRIBUTES: Final = (
    ("ice_restart_check_list", list),
    ("ice_restart_remote_candidates", list),
    ("ice_restart_remote_end", bool),
    ("ice_restart_local_candidates", list),
    ("ice_restart_early_checks_done", bool),
    ("ice_restart_nominating", set),
)


def missing_restart_api(connection: aioice.ice.Connection, gatherer: Any) -> list[str]:
    """What `ice_restart` needs of an aioice connection and aiortc's gatherer."""
    missing = [
        name
        for name, kind in RESTART_ATTRIBUTES
        if not isinstance(getattr(connection, PRIVATE_API[name], None), kind)
    ]
    password = getattr(connection, PRIVATE_API["ice_restart_local_password"], None)
    if not isinstance(password, str) or password != connection.local_password:
        missing.append("ice_restart_local_password")
    early = getattr(connection, PRIVATE_API["ice_restart_early_checks"], None)
    if not (callable(getattr(early, "clear", None)) and callable(getattr(early, "append", None))):
        missing.append("ice_restart_early_checks")
    incoming = getattr(connection, PRIVATE_API["ice_restart_check_incoming"], None)
    if not callable(incoming) or _params(incoming) != ("message", "addr", "protocol"):
        missing.append("ice_restart_check_incoming")
    start = getattr(connection, PRIVATE_API["ice_restart_check_start"], None)
    if not callable(start) or _params(start) != ("pair",):
        missing.append("ice_restart_check_start")
    remote_end = getattr(gatherer, PRIVATE_API["ice_restart_gatherer_remote_end"], None)
    if not isinstance(remote_end, bool):
        missing.append("ice_restart_gatherer_remote_end")
    return missing


async def check_private_api() -> None:
    """Refuse to start (ConfigError) on an aiortc/aioice without what `PRIVATE_API` names."""
    missing = await missing_private_api()
    if missing:
        raise ConfigError(
            f"this aiortc/aioice lacks {missing}: media forwarding would break",
            reason="aiortc_incompatible",
        )


def install(*, shared_rtcp_ticks: bool = False) -> None:
    """Put examday's stand-ins into aiortc and aioice, for this whole process (idempotent).

    Every `ScopedPeerConnection` needs three, and installs them when made: the
    address filter its gathering goes through, the gathering wrapper that
    attaches it to its shard's `UdpMux` and announces its addresses (a no-op
    without a `GatheringPlan`), and RFC 7675's consent rule.
    A media shard's `Forwarder` (made as the shard starts) also asks for
    `shared_rtcp_ticks`: the RTCP reports of every peer connection in the
    process then go out on shared ticks (`rtcp_ticks`); clients, such as the
    load tester's, keep aiortc's timing, as browsers do.
    """
    _install_host_filter()
    _install_gathering()
    ice_consent.install(aioice.ice.Connection, PRIVATE_API["consent_check"])
    if shared_rtcp_ticks:
        for name, module, _ in RTCP_LOOPS:
            rtcp_ticks.install(module, PRIVATE_API[name])


def _install_host_filter() -> None:
    """Wrap aioice's address lookup, once per process.

    Outside a `ScopedPeerConnection` gathering the wrapper calls the original,
    so any other peer connection in the process behaves as before.
    """
    current = getattr(aioice.ice, PRIVATE_API["host_addresses"])
    if getattr(current, "examday_scoped", False):
        return

    def scoped(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        allowed = _HOST_ADDRESSES.get()
        if allowed is None:
            return list(current(use_ipv4, use_ipv6))
        return list(allowed)

    scoped.examday_scoped = True  # type: ignore[attr-defined]
    setattr(aioice.ice, PRIVATE_API["host_addresses"], scoped)


def _install_gathering() -> None:
    """Wrap aioice's per-component gathering, once per process: muxes, announced addresses.

    Outside a gathering with a `GatheringPlan` the wrapper calls the original.
    """
    name = PRIVATE_API["ice_component_candidates"]
    current = getattr(aioice.ice.Connection, name)
    if getattr(current, "examday_original", None) is not None:
        return

    async def gather(
        self: aioice.ice.Connection,
        component: int,
        addresses: list[str],
        timeout: int = 5,  # noqa: ASYNC109 (aioice's own parameter, passed on)
    ) -> list[aioice.Candidate]:
        plan = _GATHERING.get()
        if plan is None:
            return list(await current(self, component, addresses, timeout))
        own = [address for address in addresses if address not in plan.muxes]
        candidates: list[aioice.Candidate] = list(await current(self, component, own, timeout))
        protocols = getattr(self, PRIVATE_API["ice_protocols"])
        announce = {id(c): plan.announced[c.host] for c in candidates if c.host in plan.announced}
        for protocol in protocols:
            if id(protocol.local_candidate) in announce and protocol.local_candidate.type == "host":
                moved = _announced(protocol.local_candidate, announce[id(protocol.local_candidate)])
                candidates[candidates.index(protocol.local_candidate)] = moved
                protocol.local_candidate = moved
        for address in addresses:
            if address in plan.muxes:
                protocol = plan.muxes[address].attach(self, component)
                protocols.append(protocol)
                candidates.insert(0, protocol.local_candidate)
        return candidates

    gather.examday_original = current  # type: ignore[attr-defined]
    setattr(aioice.ice.Connection, name, gather)


def _announced(candidate: aioice.Candidate, host: str) -> aioice.Candidate:
    return aioice.Candidate(
        foundation=candidate_foundation("host", "udp", host),
        component=candidate.component,
        transport=candidate.transport,
        priority=candidate.priority,
        host=host,
        port=candidate.port,
        type="host",
    )


class ScopedPeerConnection(RTCPeerConnection):
    """A peer connection that gathers host candidates on `host_addresses` only, and
    server-reflexive and relay ones from `ice_servers` (none by default).

    `announced` maps host addresses to what the candidates say instead; a host
    address in `muxes` takes no socket of its own: the connection shares the mux's.
    """

    def __init__(
        self,
        host_addresses: Sequence[str],
        *,
        announced: Mapping[str, str] | None = None,
        muxes: Mapping[str, UdpMux] | None = None,
        ice_servers: Sequence[RTCIceServer] = (),
    ) -> None:
        install()
        configuration = RTCConfiguration(
            iceServers=list(ice_servers), bundlePolicy=RTCBundlePolicy.MAX_BUNDLE
        )
        super().__init__(configuration)
        self._host_addresses = tuple(host_addresses)
        self._plan = GatheringPlan(dict(announced or {}), dict(muxes or {}))

    async def setLocalDescription(self, sessionDescription: Any = None) -> None:
        # aiortc gathers here and nowhere else
        with gathering_on(self._host_addresses, self._plan):
            await super().setLocalDescription(sessionDescription)


@contextlib.contextmanager
def gathering_on(
    host_addresses: Sequence[str], plan: GatheringPlan | None = None
) -> Iterator[None]:
    """ICE gathering started in this context uses `host_addresses` only, as `plan` says."""
    install()
    token = _HOST_ADDRESSES.set(tuple(host_addresses))
    plan_token = _GATHERING.set(plan if plan and (plan.announced or plan.muxes) else None)
    try:
        yield
    finally:
        _GATHERING.reset(plan_token)
        _HOST_ADDRESSES.reset(token)


class EncodedFrameTap:
    """Stands in for an `RTCRtpReceiver`'s decoder queue.

    `put` is called on the event loop by the receiver; `get` by its decoder
    thread, which is thereby parked until the receiver stops.
    """

    def __init__(self, on_frame: Callable[[Any, Any], None], on_end: Callable[[], None]) -> None:
        self._on_frame = on_frame
        self._on_end = on_end
        self._ended = threading.Event()
        self.frames = 0

    def put(self, item: tuple[Any, Any] | None) -> None:
        if item is None:
            if not self._ended.is_set():
                self._ended.set()
                self._on_end()
            return
        self.frames += 1
        codec, frame = item
        try:
            self._on_frame(codec, frame)
        except Exception:  # raising here would end aiortc's receive loop, and the session
            logger.exception("forwarding a received frame failed")

    def get(self) -> None:
        self._ended.wait()


def tap_receiver(
    receiver: RTCRtpReceiver,
    on_frame: Callable[[Any, Any], None],
    on_end: Callable[[], None],
) -> EncodedFrameTap:
    """Send `receiver`'s encoded frames to `on_frame(codec, JitterFrame)` instead of a decoder.

    Must run before the receiver starts (before the answer is applied).
    `on_end` runs once when the receiver stops: BYE, DTLS closed or `stop()`.
    """
    tap = EncodedFrameTap(on_frame, on_end)
    setattr(receiver, PRIVATE_API["receiver_decoder_queue"], tap)
    return tap


class RtpTap:
    """Stands in for an `RTCRtpReceiver`'s jitter buffer; sees every accepted packet first."""

    def __init__(self, inner: Any, on_packet: Callable[[Any], bool]) -> None:
        self._inner = inner
        self._on_packet = on_packet

    def add(self, packet: Any) -> tuple[bool, Any]:
        try:
            frames_wanted = self._on_packet(packet)
        except Exception:  # raising here would end aiortc's receive loop, and the session
            logger.exception("forwarding a received RTP packet failed")
            frames_wanted = True
        if frames_wanted:
            return self._inner.add(packet)  # type: ignore[no-any-return]
        return False, None


def tap_rtp(receiver: RTCRtpReceiver, on_packet: Callable[[Any], bool]) -> RtpTap:
    """Send each RTP packet `receiver` accepts to `on_packet(RtpPacket)` first.

    `on_packet` returns whether the receiver should still assemble frames
    (for `tap_receiver`); while it returns False the jitter buffer is skipped.
    """
    tap = RtpTap(getattr(receiver, PRIVATE_API["receiver_jitter_buffer"]), on_packet)
    setattr(receiver, PRIVATE_API["receiver_jitter_buffer"], tap)
    return tap


async def request_keyframe(receiver: RTCRtpReceiver, media_ssrc: int) -> None:
    """Send a PLI for `media_ssrc` to the peer that sends to `receiver`."""
    await getattr(receiver, PRIVATE_API["receiver_send_pli"])(media_ssrc)


def remote_candidate(candidate: str, mid: str | None) -> RTCIceCandidate:
    """An `a=candidate` value (trickled by PATCH) as aiortc's `addIceCandidate` wants it."""
    parsed: RTCIceCandidate = candidate_from_sdp(candidate)
    parsed.sdpMid = mid
    return parsed


def receiving_ssrc(receiver: RTCRtpReceiver) -> int | None:
    sources = receiver.getSynchronizationSources()
    return int(sources[0].source) if sources else None


def on_keyframe_request(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Call `callback` when `sender`'s viewer asks for a keyframe (PLI or FIR)."""
    setattr(sender, PRIVATE_API["sender_keyframe_hook"], callback)


class PackOnlyEncoder:
    """Packetizes pre-encoded packets; counts encodes, which forwarding never asks for."""

    def __init__(self, codec: Any) -> None:
        self._inner = get_encoder(codec)
        self.encodes = 0

    def pack(self, packet: Any) -> tuple[list[bytes], int]:
        payloads, timestamp = self._inner.pack(packet)
        return list(payloads), int(timestamp)

    def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        self.encodes += 1
        logger.warning("forwarding sender asked to encode a %s", type(frame).__name__)
        payloads, timestamp = self._inner.encode(frame, force_keyframe)
        return list(payloads), int(timestamp)


def install_pack_only_encoder(sender: RTCRtpSender, codec: Any) -> PackOnlyEncoder:
    encoder = PackOnlyEncoder(codec)
    setattr(sender, PRIVATE_API["sender_encoder"], encoder)
    return encoder


def tap_rtcp(
    sender_or_receiver: RTCRtpSender | RTCRtpReceiver, on_packet: Callable[[Any], None]
) -> None:
    """Show `on_packet` each RTCP packet an aiortc sender or receiver sends from now on."""
    name = PRIVATE_API["rtcp_send"]
    send_rtcp = getattr(sender_or_receiver, name)

    async def tapped(packets: Any) -> None:
        # A sender sends a list (its report and SDES), a receiver one packet at a time.
        for packet in packets if isinstance(packets, list) else [packets]:
            on_packet(packet)
        await send_rtcp(packets)

    setattr(sender_or_receiver, name, tapped)


def filter_incoming_rtp(transport: RTCDtlsTransport, keep: Callable[[bytes], bool]) -> None:
    """Show `keep` each RTP packet `transport` receives (SRTP removed), before its receivers.

    A packet for which `keep` returns False is dropped, as if lost on the way.
    """
    name = PRIVATE_API["transport_rtp_in"]
    handle_rtp: Callable[[bytes, int], Awaitable[None]] = getattr(transport, name)

    async def filtered(data: bytes, arrival_time_ms: int) -> None:
        if keep(data):
            await handle_rtp(data, arrival_time_ms)

    setattr(transport, name, filtered)


@contextlib.contextmanager
def keyframe_requests_ignored(sender: RTCRtpSender) -> Iterator[None]:
    """While in this context, `sender` ignores the keyframe requests (PLI/FIR) it gets."""
    name = PRIVATE_API["sender_keyframe_hook"]
    own = vars(sender).get(name)  # a hook set by `on_keyframe_request`, if any
    setattr(sender, name, lambda: None)
    try:
        yield
    finally:
        if own is None:
            delattr(sender, name)  # the class's method again
        else:
            setattr(sender, name, own)


def stun_protocols(connection: aioice.ice.Connection) -> list[aioice.ice.StunProtocol]:
    """An aioice connection's STUN transports, one per local candidate (after gathering)."""
    return list(getattr(connection, PRIVATE_API["ice_protocols"]))


def ice_restart(pc: RTCPeerConnection) -> IceRestart:
    """An ICE restart of `pc`'s ICE transport (its only one, with BUNDLE); see `ice_restart`."""
    transports = {
        id(t.receiver.transport.transport): t.receiver.transport.transport
        for t in pc.getTransceivers()
    }
    if len(transports) != 1:
        raise ValueError("an ICE restart needs one ICE transport (BUNDLE)")
    (ice,) = transports.values()
    return IceRestart(getattr(ice, PRIVATE_API["ice_connection"]), ice.iceGatherer)


def selected_remote_addresses(pc: RTCPeerConnection) -> list[tuple[str, int]]:
    """Where `pc` sends its media: the remote address of each nominated candidate pair."""
    return [
        pair.remote_addr
        for connection in ice_connections(pc)
        for pair in getattr(connection, PRIVATE_API["ice_nominated"]).values()
    ]


def ice_connections(pc: RTCPeerConnection) -> list[aioice.ice.Connection]:
    """The aioice connections of `pc`'s ICE transports (one, with BUNDLE)."""
    found: dict[int, aioice.ice.Connection] = {}
    for transceiver in pc.getTransceivers():
        connection = getattr(
            transceiver.receiver.transport.transport, PRIVATE_API["ice_connection"]
        )
        found[id(connection)] = connection
    return list(found.values())
