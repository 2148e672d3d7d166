"""Real aiortc peers for the media tests: a publisher and a viewer, on loopback.

The publisher's video frames carry their own index as a 4x4 grid of black or
white blocks (16 bits), which survives VP8 compression, so a viewer can tell
which frame it decoded and when it was sent.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import re
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
import numpy.typing as npt
from aiortc import RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtpPacket

from actors.media.aiortc import rtc
from actors.media.session import PublishSession, ViewSession
from actors.media.sfu import Forwarder

LOOPBACK = ("127.0.0.1",)
WIDTH, HEIGHT, FPS = 320, 240, 15
GRID = 4  # GRID x GRID blocks, one bit each
AUDIO_RATE = 48000
AUDIO_SAMPLES = 960  # 20 ms


def draw_index(index: int) -> npt.NDArray[np.uint8]:
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    bh, bw = HEIGHT // GRID, WIDTH // GRID
    for bit in range(GRID * GRID):
        if index >> (GRID * GRID - 1 - bit) & 1:
            row, col = divmod(bit, GRID)
            image[row * bh : (row + 1) * bh, col * bw : (col + 1) * bw] = 255
    return image


def read_index(image: npt.NDArray[Any]) -> int:
    height, width = image.shape[:2]
    bh, bw = height // GRID, width // GRID
    value = 0
    for bit in range(GRID * GRID):
        row, col = divmod(bit, GRID)
        y, x = row * bh + bh // 2, col * bw + bw // 2
        patch = image[y - bh // 4 : y + bh // 4, x - bw // 4 : x + bw // 4]
        value = value << 1 | int(patch.mean() > 128)
    return value


class IndexedVideoTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, fps: int = FPS) -> None:
        super().__init__()
        self.fps = fps
        self.sent_at: dict[int, float] = {}
        self._index = 0
        self._start: float | None = None

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        await asyncio.sleep(max(0.0, self._start + self._index / self.fps - time.monotonic()))
        index = self._index
        self._index += 1
        frame = av.VideoFrame.from_ndarray(draw_index(index), format="rgb24")
        frame.pts = index * (90000 // self.fps)
        frame.time_base = fractions.Fraction(1, 90000)
        self.sent_at[index] = time.time()
        return frame


class ToneAudioTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self, hz: float = 440.0) -> None:
        super().__init__()
        self._hz = hz
        self._samples = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        await asyncio.sleep(max(0.0, self._start + self._samples / AUDIO_RATE - time.monotonic()))
        t = (self._samples + np.arange(AUDIO_SAMPLES)) / AUDIO_RATE
        wave = (8000 * np.sin(2 * math.pi * self._hz * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(wave.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = self._samples
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        self._samples += AUDIO_SAMPLES
        return frame


async def local_offer(pc: rtc.ScopedPeerConnection) -> str:
    await pc.setLocalDescription(await pc.createOffer())
    return str(pc.localDescription.sdp)


@dataclass
class Publisher:
    pc: rtc.ScopedPeerConnection
    session: PublishSession
    video: IndexedVideoTrack | None
    audio: ToneAudioTrack | None

    async def close(self) -> None:
        await self.pc.close()


async def publish(
    forwarder: Forwarder,
    *,
    video: bool = True,
    audio: bool = True,
    source: Any = "camera",
    fps: int = FPS,
    video_codec: str | None = None,
) -> Publisher:
    pc = rtc.ScopedPeerConnection(LOOPBACK)
    video_track = IndexedVideoTrack(fps) if video else None
    audio_track = ToneAudioTrack() if audio else None
    for track in (audio_track, video_track):
        if track is not None:
            transceiver = pc.addTransceiver(track, direction="sendonly")
            if track.kind == "video" and video_codec:
                capabilities = RTCRtpSender.getCapabilities("video").codecs
                transceiver.setCodecPreferences(
                    [c for c in capabilities if c.mimeType in (video_codec, "video/rtx")]
                )
    answer, session = await forwarder.publish(await local_offer(pc), source=source)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    return Publisher(pc, session, video_track, audio_track)


@dataclass
class Viewer:
    pc: rtc.ScopedPeerConnection
    session: ViewSession
    indices: list[tuple[int, float]] = field(default_factory=list)  # (index, arrival)
    audio_frames: int = 0
    audio_peak: float = 0.0
    ended: set[str] = field(default_factory=set)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def close(self) -> None:
        await self.pc.close()
        for task in self.tasks:
            task.cancel()

    async def _consume(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                if isinstance(frame, av.VideoFrame):
                    self.indices.append((read_index(frame.to_ndarray(format="rgb24")), time.time()))
                elif isinstance(frame, av.AudioFrame):
                    self.audio_frames += 1
                    peak = float(np.abs(frame.to_ndarray()).max())
                    self.audio_peak = max(self.audio_peak, peak)
        except MediaStreamError:
            self.ended.add(track.kind)


class RtpLink:
    """The viewer's end of its link from the SFU: sees every RTP packet it gets.

    Packets are recorded after SRTP, before the viewer's receiver. `lose(pt,
    seq)` makes the link lossy (the one fake the tests allow): a packet it
    picks is lost the first time it comes, as on a real network.
    """

    def __init__(self, lose: Callable[[int, int], bool] | None = None) -> None:
        self.packets: list[RtpPacket] = []
        self.lost: set[tuple[int, int]] = set()
        self.payload_types: dict[str, int] = {}
        self._lose = lose

    def install(self, pc: rtc.ScopedPeerConnection) -> None:
        for transport in {
            id(t.receiver.transport): t.receiver.transport for t in pc.getTransceivers()
        }.values():
            self._wrap(transport)

    def _wrap(self, transport: Any) -> None:
        original = transport._handle_rtp_data

        async def handle(data: bytes, arrival_time_ms: int) -> None:
            payload_type = data[1] & 0x7F
            seq, ssrc = struct.unpack_from("!H", data, 2)[0], struct.unpack_from("!L", data, 8)[0]
            lossy = self._lose is not None and (ssrc, seq) not in self.lost
            if lossy and self._lose is not None and self._lose(payload_type, seq):
                self.lost.add((ssrc, seq))
                return
            self.packets.append(RtpPacket.parse(data))
            await original(data, arrival_time_ms)

        transport._handle_rtp_data = handle

    def learn(self, answer: str) -> None:
        for pt, name in re.findall(r"a=rtpmap:(\d+) ([\w-]+)/", answer):
            self.payload_types.setdefault(name.lower(), int(pt))

    def of(self, name: str) -> list[RtpPacket]:
        """The packets of one codec ("vp8", "opus", "rtx"), in arrival order."""
        pt = self.payload_types[name]
        return [p for p in self.packets if p.payload_type == pt]


async def view(
    forwarder: Forwarder,
    sources: Sequence[str],
    kinds: Sequence[str] = ("audio", "video"),
    link: RtpLink | None = None,
) -> Viewer:
    pc = rtc.ScopedPeerConnection(LOOPBACK)
    for kind in kinds:
        pc.addTransceiver(kind, direction="recvonly")
    answer, session = await forwarder.subscribe(await local_offer(pc), sources)
    viewer = Viewer(pc, session)
    if link is not None:
        link.learn(answer)
        link.install(pc)

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        viewer.tasks.append(asyncio.ensure_future(viewer._consume(track)))

    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    return viewer


async def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Wait for `condition`; fail if it does not hold within `within` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.05)


def tap_rtcp(sender_or_receiver: Any, on_packet: Callable[[Any], None]) -> None:
    """Show `on_packet` each RTCP packet an aiortc sender or receiver sends from now on."""
    send_rtcp = sender_or_receiver._send_rtcp

    async def tapped(packets: Any) -> None:
        # A sender sends a list (its report and SDES), a receiver one packet at a time.
        for packet in packets if isinstance(packets, list) else [packets]:
            on_packet(packet)
        await send_rtcp(packets)

    sender_or_receiver._send_rtcp = tapped
