"""Real WebRTC clients of the load tester: a WHIP publisher showing a real face, a WHEP watcher.

Both are aiortc peers restricted to loopback host candidates (no STUN), talking
the standard protocols to the gateway, exactly as a browser or an app would.
The publisher's camera shows a face photo with a little motion (so that the
encoder keeps producing frames); `show("b")` switches to another person and
`show(None)` to an empty frame, to provoke the face monitor's incidents.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import av
import numpy as np
import numpy.typing as npt
from aiortc import MediaStreamTrack, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from actors.rtc import ScopedPeerConnection

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


class FaceCameraTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, faces: dict[str, npt.NDArray[np.uint8]], showing: str | None) -> None:
        super().__init__()
        self.faces = faces
        self.showing = showing
        self._blank = np.full((HEIGHT, WIDTH, 3), 40, dtype=np.uint8)
        self._index = 0
        self._start: float | None = None

    def show(self, who: str | None) -> None:
        self.showing = who

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._index / FPS
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        base = self.faces[self.showing] if self.showing else self._blank
        # A one-pixel drift keeps the encoder sending real frames, not skips.
        image = np.roll(base, self._index % 4 - 2, axis=1)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = self._index * (90000 // FPS)
        frame.time_base = fractions.Fraction(1, 90000)
        self._index += 1
        return frame


class ToneTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._samples = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._samples / AUDIO_RATE
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        t = (np.arange(AUDIO_SAMPLES) + self._samples) / AUDIO_RATE
        tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(tone, format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = self._samples
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        self._samples += AUDIO_SAMPLES
        return frame


@dataclass
class WhipSession:
    pc: ScopedPeerConnection
    location: str
    camera: FaceCameraTrack | None

    async def close(self, http: aiohttp.ClientSession, headers: dict[str, str]) -> None:
        await self.pc.close()
        async with http.delete(self.location, headers=headers):
            pass


async def _exchange(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], pc: ScopedPeerConnection
) -> str:
    await pc.setLocalDescription(await pc.createOffer())
    async with http.post(
        url, data=pc.localDescription.sdp, headers={**headers, "Content-Type": "application/sdp"}
    ) as response:
        if response.status != 201:
            raise MediaRefused(response.status, await response.text())
        answer = await response.text()
        location = response.headers["Location"]
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    return location


class MediaRefused(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"{status} {body[:200]}")
        self.status = status


async def whip_publish(
    http: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    hosts: Sequence[str],
    faces: dict[str, npt.NDArray[np.uint8]] | None,
    showing: str | None = "a",
    *,
    audio: bool = True,
) -> WhipSession:
    pc = ScopedPeerConnection(hosts)
    camera = FaceCameraTrack(faces, showing) if faces is not None else None
    if audio:
        pc.addTransceiver(ToneTrack(), direction="sendonly")
    if camera is not None:
        pc.addTransceiver(camera, direction="sendonly")
    try:
        location = await _exchange(http, url, headers, pc)
    except BaseException:
        await pc.close()
        raise
    return WhipSession(pc, location, camera)


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
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

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
        for task in self.tasks:
            task.cancel()
        await self.pc.close()
        async with http.delete(self.location, headers=headers):
            pass


async def whep_watch(
    http: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    hosts: Sequence[str],
    kinds: Sequence[str] = ("audio", "video"),
) -> WhepSession:
    pc = ScopedPeerConnection(hosts)
    for kind in kinds:
        pc.addTransceiver(kind, direction="recvonly")
    session = WhepSession(pc, "", WatchStats(), time.monotonic())

    async def consume(track: MediaStreamTrack) -> None:
        session.stats.tracks.add(track.kind)
        try:
            while True:
                frame = await track.recv()
                if isinstance(frame, av.VideoFrame):
                    session.stats.frame(session.started)
                else:
                    session.stats.audio_frames += 1
        except MediaStreamError:
            return

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        session.tasks.append(asyncio.ensure_future(consume(track)))

    try:
        session.location = await _exchange(http, url, headers, pc)
    except BaseException:
        await pc.close()
        raise
    return session
