"""Real WebRTC clients of the load tester: a WHIP publisher showing a real face, a WHEP watcher.

Both are aiortc peers restricted to loopback host candidates (no STUN), talking
the standard protocols to the gateway, exactly as a browser or an app would.
`sending_peer`, `receiving_peer`, `local_offer` and `accept_answer` are how
every examday WebRTC client is built and connected, the tests' included
(tests.support.webrtc puts decoding viewers and index-bearing tracks on them):
this module ships in the wheel, the tests do not.
A publisher whose network changes moves by an ICE restart (`WhipSession.restart_ice`,
RFC 9725 section 4.3.2), its session going on. Both ask the endpoint for its ICE
servers first (OPTIONS, its `Link`s), as web/common/webrtc.js does.
The publisher's camera shows a face photo with a little motion, encoded once per
process (`Clips`); `show("b")` switches to another person and `show(None)` to an
empty frame, to provoke the face monitor's incidents.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import numpy.typing as npt
from aiortc import (
    MediaStreamTrack,
    RTCIceServer,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCSessionDescription,
)

from actors.media import trickle
from actors.media.aiortc import rtc
from actors.media.aiortc.rtc import ScopedPeerConnection

FPS = 15
WIDTH, HEIGHT = 320, 240
AUDIO_RATE = 48000
AUDIO_SAMPLES = 960
FREEZE_SECONDS = 0.5


def load_face(path: Path) -> npt.NDArray[np.uint8]:
    """A face photo letterboxed into the camera frame."""
    from PIL import Image

    with Image.open(path) as opened:
        face = opened.convert("RGB")
        face.thumbnail((WIDTH, HEIGHT))
        canvas = Image.new("RGB", (WIDTH, HEIGHT), (40, 40, 40))
        canvas.paste(face, ((WIDTH - face.width) // 2, (HEIGHT - face.height) // 2))
        return np.asarray(canvas, dtype=np.uint8).copy()


@dataclass(frozen=True)
class Clips:
    """What the simulated cameras and microphones send, encoded once per process.

    Encoding is what a real phone does on its own chip; a load generator that
    encoded VP8 and Opus for every simulated publisher would spend its cores on
    that rather than on the platform's load. So each look (person "a", person "b",
    nobody) is a short VP8 loop with a keyframe every `KEYFRAME_EVERY` frames, and
    every publisher replays the same encoded frames through aiortc's public
    pre-encoded path (a track that returns `av.Packet`s is packetized, not encoded).
    """

    video: dict[str | None, list[bytes]]
    audio: list[bytes]


KEYFRAME_EVERY = FPS  # a keyframe a second: the frame sampler and new viewers wait <= 1 s
CLIP_FRAMES = 2 * FPS
VIDEO_BITRATE = 300_000


def encode_clips(faces: dict[str, npt.NDArray[np.uint8]]) -> Clips:
    blank = np.full((HEIGHT, WIDTH, 3), 40, dtype=np.uint8)
    looks: dict[str | None, npt.NDArray[np.uint8]] = {None: blank}
    looks.update(faces)
    return Clips({who: _vp8_loop(image) for who, image in looks.items()}, _opus_tone())


def _vp8_loop(image: npt.NDArray[np.uint8]) -> list[bytes]:
    # A one-pixel drift: a camera image is never perfectly still.
    moved = (np.roll(image, index % 4 - 2, axis=1) for index in range(CLIP_FRAMES))
    frames = encode_vp8(moved, bitrate=VIDEO_BITRATE, keyframe_every=KEYFRAME_EVERY)
    if len(frames) != CLIP_FRAMES:
        raise RuntimeError(f"the VP8 encoder returned {len(frames)} frames for {CLIP_FRAMES}")
    return frames


def encode_vp8(
    images: Iterable[npt.NDArray[np.uint8]], *, bitrate: int, keyframe_every: int
) -> list[bytes]:
    """RGB camera images (WIDTH x HEIGHT) as VP8 frames at FPS, encoded the way a
    real-time sender does (libvpx realtime, no lag), a keyframe every `keyframe_every`."""
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    encoder.time_base = fractions.Fraction(1, FPS)
    encoder.bit_rate = bitrate
    encoder.gop_size = keyframe_every
    encoder.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    frames: list[bytes] = []
    for index, image in enumerate(images):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = index
        if index % keyframe_every == 0:
            frame.pict_type = av.video.frame.PictureType.I
        frames += [bytes(packet) for packet in encoder.encode(frame)]
    return frames + [bytes(packet) for packet in encoder.encode(None)]


def _opus_tone(seconds: int = 1) -> list[bytes]:
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format = AUDIO_RATE, "mono", "s16"
    encoder.time_base = fractions.Fraction(1, AUDIO_RATE)
    packets: list[bytes] = []
    for start in range(0, seconds * AUDIO_RATE, AUDIO_SAMPLES):
        t = (np.arange(AUDIO_SAMPLES) + start) / AUDIO_RATE
        tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(tone, format="s16", layout="mono")
        frame.sample_rate, frame.pts = AUDIO_RATE, start
        packets += [bytes(packet) for packet in encoder.encode(frame)]
    return packets


class _PacedTrack(MediaStreamTrack):
    """Replays encoded units at `rate` per second as `av.Packet`s."""

    def __init__(self, rate: int, clock_rate: int) -> None:
        super().__init__()
        self._rate, self._clock_rate = rate, clock_rate
        self._sent = 0
        self._start: float | None = None

    async def _packet(self, data: bytes) -> av.Packet[Any]:
        if self._start is None:
            self._start = time.monotonic()
        await asyncio.sleep(max(0.0, self._start + self._sent / self._rate - time.monotonic()))
        packet = av.Packet(data)
        packet.pts = self._sent * (self._clock_rate // self._rate)
        packet.time_base = fractions.Fraction(1, self._clock_rate)
        self._sent += 1
        return packet


class FaceCameraTrack(_PacedTrack):
    kind = "video"

    def __init__(self, clips: Clips, showing: str | None) -> None:
        super().__init__(FPS, 90000)
        self.clips = clips
        self.showing = showing
        self._position = 0

    def show(self, who: str | None) -> None:
        """Switch look from the next frame: a new loop starts on its keyframe."""
        self.showing = who
        self._position = 0

    async def recv(self) -> av.Packet[Any]:
        clip = self.clips.video[self.showing]
        data = clip[self._position % len(clip)]
        self._position += 1
        return await self._packet(data)


class ToneTrack(_PacedTrack):
    kind = "audio"

    def __init__(self, clips: Clips) -> None:
        super().__init__(AUDIO_RATE // AUDIO_SAMPLES, AUDIO_RATE)
        self._packets = clips.audio

    async def recv(self) -> av.Packet[Any]:
        return await self._packet(self._packets[self._sent % len(self._packets)])


def sending_peer(
    hosts: Sequence[str],
    tracks: Iterable[MediaStreamTrack | None],
    *,
    video_mime_types: Sequence[str] = (),
    ice_servers: Sequence[RTCIceServer] = (),
) -> ScopedPeerConnection:
    """A peer on `hosts` (and `ice_servers`) sending `tracks` (None: left out), in order.

    `video_mime_types`, when given, are the only video codecs it offers.
    """
    pc = ScopedPeerConnection(hosts, ice_servers=ice_servers)
    for track in tracks:
        if track is None:
            continue
        transceiver = pc.addTransceiver(track, direction="sendonly")
        if track.kind == "video" and video_mime_types:
            codecs = RTCRtpSender.getCapabilities("video").codecs
            transceiver.setCodecPreferences([c for c in codecs if c.mimeType in video_mime_types])
    return pc


def receiving_peer(
    hosts: Sequence[str], kinds: Sequence[str], *, ice_servers: Sequence[RTCIceServer] = ()
) -> ScopedPeerConnection:
    """A peer on `hosts` (and `ice_servers`) receiving one track of each of `kinds`."""
    pc = ScopedPeerConnection(hosts, ice_servers=ice_servers)
    for kind in kinds:
        pc.addTransceiver(kind, direction="recvonly")
    return pc


def receivers(pc: ScopedPeerConnection) -> list[RTCRtpReceiver]:
    return [transceiver.receiver for transceiver in pc.getTransceivers()]


async def local_offer(pc: ScopedPeerConnection) -> str:
    """Gather (on the peer's own hosts) and return the complete offer, candidates in it."""
    await pc.setLocalDescription(await pc.createOffer())
    return str(pc.localDescription.sdp)


async def accept_answer(pc: ScopedPeerConnection, answer: str) -> None:
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))


def _link_values(header: str) -> list[str]:
    """A `Link` header's values, split at the commas outside quotes and <...>."""
    values: list[str] = []
    current = ""
    quoted = bracketed = False
    for char in header:
        if char == '"' and not bracketed:
            quoted = not quoted
        elif char == "<" and not quoted:
            bracketed = True
        elif char == ">" and not quoted:
            bracketed = False
        if char == "," and not quoted and not bracketed:
            values.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        values.append(current)
    return values


LINK_URL = re.compile(r"^\s*<([^>]*)>")
LINK_PARAM = re.compile(r';\s*([\w-]+)\s*=\s*("([^"]*)"|[^;]*)')


def ice_servers_from(header: str | None) -> list[RTCIceServer]:
    """The ICE servers of `Link: <turn:...>; rel="ice-server"; username=".."; credential=".."`
    (RFC 9725 section 4.6), as web/common/webrtc.js reads them."""
    servers: list[RTCIceServer] = []
    for value in _link_values(header or ""):
        url = LINK_URL.match(value)
        if url is None:
            continue
        params = {
            m.group(1).lower(): m.group(3) if m.group(3) is not None else m.group(2).strip()
            for m in LINK_PARAM.finditer(value[url.end() :])
        }
        if params.get("rel") != "ice-server":
            continue
        servers.append(RTCIceServer(url.group(1), params.get("username"), params.get("credential")))
    return servers


async def linked_ice_servers(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> list[RTCIceServer]:
    """The ICE servers an endpoint links to an authenticated OPTIONS, before the offer, so
    the offer carries relay candidates from the start (as web/common/webrtc.js does).
    None when it cannot say: host candidates still work on loopback."""
    try:
        async with http.options(url, headers=headers) as response:
            return ice_servers_from(response.headers.get("Link"))
    except (aiohttp.ClientError, TimeoutError):
        return []


async def begin_ice_restart(
    pc: ScopedPeerConnection, hosts: Sequence[str]
) -> tuple[rtc.IceRestart, str]:
    """Restart `pc`'s ICE from `hosts` (its new network): the PATCH body to send.

    The old addresses keep carrying the media until the new pair is chosen
    (`finish_ice_restart`); the DTLS association and its SRTP stay.
    """
    restart = rtc.ice_restart(pc)
    ufrag, pwd = await restart.begin(hosts=hosts)
    candidates = [candidate.to_sdp() for candidate in restart.local_candidates]
    return restart, trickle.ice_fragment(ufrag, pwd, _bundle_mid(pc), candidates)


async def finish_ice_restart(
    pc: ScopedPeerConnection, restart: rtc.IceRestart, answer: str, *, timeout_s: float = 10.0
) -> bool:
    """Apply the server's 200 fragment (its new credentials and candidates); run the
    checks. True once the new pair carries the media and the old sockets are closed."""
    fragment = trickle.parse_fragment(answer)
    restart.remote(*fragment.restart_credentials())
    for item in fragment.candidates:
        await pc.addIceCandidate(rtc.remote_candidate(item.candidate, _bundle_mid(pc)))
    if fragment.end_of_candidates:
        await pc.addIceCandidate(None)
    return await restart.run(timeout_s)


def _bundle_mid(pc: ScopedPeerConnection) -> str:
    return str(pc.getTransceivers()[0].mid)


async def restart_ice(
    http: aiohttp.ClientSession,
    location: str,
    headers: dict[str, str],
    etag: str,
    pc: ScopedPeerConnection,
    hosts: Sequence[str],
) -> str:
    """ICE restart by PATCH (RFC 9725 section 4.3.2) from `hosts`; returns the new ETag."""
    restart, fragment = await begin_ice_restart(pc, hosts)
    patch_headers = {**headers, "Content-Type": trickle.TRICKLE_TYPE, "If-Match": etag}
    async with http.patch(location, data=fragment, headers=patch_headers) as response:
        if response.status != 200:
            await restart.abandon()
            raise MediaRefused(
                response.status, await response.text(), response.headers.get("Retry-After")
            )
        answer = await response.text()
        new_etag = response.headers["ETag"]
    if not await finish_ice_restart(pc, restart, answer):
        raise ConnectionError("the ICE restart found no working pair")
    return new_etag


@dataclass
class WhipSession:
    pc: ScopedPeerConnection
    location: str
    camera: FaceCameraTrack | None
    etag: str = ""

    async def restart_ice(
        self, http: aiohttp.ClientSession, headers: dict[str, str], hosts: Sequence[str]
    ) -> None:
        """Move to `hosts` (a new network) by an ICE restart; the session goes on."""
        self.etag = await restart_ice(http, self.location, headers, self.etag, self.pc, hosts)

    async def close(self, http: aiohttp.ClientSession, headers: dict[str, str]) -> None:
        await self.pc.close()
        async with http.delete(self.location, headers=headers):
            pass


async def _exchange(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], pc: ScopedPeerConnection
) -> tuple[str, str]:
    """POST the offer, apply the answer: the session's (Location, ETag)."""
    offer = await local_offer(pc)
    async with http.post(
        url, data=offer, headers={**headers, "Content-Type": "application/sdp"}
    ) as response:
        if response.status != 201:
            raise MediaRefused(
                response.status, await response.text(), response.headers.get("Retry-After")
            )
        answer = await response.text()
        location = response.headers["Location"]
        etag = response.headers.get("ETag", "")
    await accept_answer(pc, answer)
    return location, etag


class MediaRefused(Exception):
    def __init__(self, status: int, body: str, retry_after: str | None = None) -> None:
        super().__init__(f"{status} {body[:200]}")
        self.status = status
        self.reason = _problem_reason(body)
        # Seconds the server asked us to wait (RFC 9110 Retry-After, the seconds form).
        self.retry_after = float(retry_after) if retry_after and retry_after.isdigit() else None


def _problem_reason(body: str) -> str:
    """The machine-readable reason of a problem+json body, or "" for anything else."""
    try:
        problem = json.loads(body)
    except ValueError:
        return ""
    return str(problem.get("reason", "")) if isinstance(problem, dict) else ""


async def whip_publish(
    http: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    hosts: Sequence[str],
    clips: Clips,
    showing: str | None = "a",
    *,
    audio: bool = True,
    video: bool = True,
    linked_servers: bool = True,
) -> WhipSession:
    """Publish to `url`; with `linked_servers`, gather with the ICE servers it links."""
    camera = FaceCameraTrack(clips, showing) if video else None
    tone = ToneTrack(clips) if audio else None
    servers = await linked_ice_servers(http, url, headers) if linked_servers else []
    # The clips are VP8: offer nothing else.
    pc = sending_peer(hosts, (tone, camera), video_mime_types=("video/VP8",), ice_servers=servers)
    try:
        location, etag = await _exchange(http, url, headers, pc)
    except BaseException:
        await pc.close()
        raise
    return WhipSession(pc, location, camera, etag)


@dataclass
class WatchStats:
    """What a watcher got from one published session."""

    frames: int = 0
    audio_frames: int = 0
    freezes: int = 0
    first_frame_s: float | None = None
    last_frame: float = 0.0
    tracks: set[str] = field(default_factory=set)

    def frame(self, started: float) -> None:
        now = time.monotonic()
        if self.first_frame_s is None:
            self.first_frame_s = now - started
        elif now - self.last_frame > FREEZE_SECONDS:
            self.freezes += 1
        self.last_frame = now
        self.frames += 1


@dataclass
class WhepSession:
    pc: ScopedPeerConnection
    location: str
    stats: WatchStats
    started: float

    async def rtp(self) -> dict[str, int]:
        """Packets received and lost, and bytes, from the peer connection's own statistics."""
        report = await self.pc.getStats()
        totals = {"packets": 0, "lost": 0, "bytes": 0}
        for stat in report.values():
            kind = type(stat).__name__
            if kind == "RTCInboundRtpStreamStats":
                totals["packets"] += int(stat.packetsReceived)
                totals["lost"] += max(0, int(stat.packetsLost))
            elif kind == "RTCTransportStats":
                totals["bytes"] += int(stat.bytesReceived)
        return totals

    async def close(self, http: aiohttp.ClientSession, headers: dict[str, str]) -> None:
        await self.pc.close()
        async with http.delete(self.location, headers=headers):
            pass


async def whep_watch(
    http: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    hosts: Sequence[str],
    kinds: Sequence[str] = ("audio", "video"),
    *,
    linked_servers: bool = True,
) -> WhepSession:
    """Watch `url`; with `linked_servers`, gather with the ICE servers it links."""
    servers = await linked_ice_servers(http, url, headers) if linked_servers else []
    pc = receiving_peer(hosts, kinds, ice_servers=servers)
    session = WhepSession(pc, "", WatchStats(), time.monotonic())
    stats = session.stats

    def on_video(codec: Any, frame: Any) -> None:
        stats.tracks.add("video")
        stats.frame(session.started)

    def on_audio(codec: Any, frame: Any) -> None:
        stats.tracks.add("audio")
        stats.audio_frames += 1

    for kind, receiver in zip(kinds, receivers(pc), strict=True):
        # Count complete encoded frames as they leave the jitter buffer: a proctor
        # simulator that decoded every stream would spend the generator's cores.
        on_frame = on_video if kind == "video" else on_audio
        rtc.tap_receiver(receiver, on_frame, lambda: None)

    try:
        session.location, _ = await _exchange(http, url, headers, pc)
    except BaseException:
        await pc.close()
        raise
    return session
