"""The tests' WebRTC client: real aiortc publishers and viewers, on loopback.

The publisher's video frames carry their own index as a 4x4 grid of black or
white blocks (16 bits), which survives VP8 compression, so a viewer can tell
which frame it decoded and when it was sent. Peers are built and connected as
the load tester's are (`loadtests.webrtc`); what the tests add is the indexed
video, the decoding viewer and two ways to reach a forwarder: `publish` and
`view` call one in the test's process, `whip_publish` and `whep_watch` go
through the gateway's WHIP and WHEP endpoints (HTTP, httpx). A publisher moves to
another address (a new network) by an ICE restart (`restart_ice`).
"""

from __future__ import annotations

import asyncio
import fractions
import math
import re
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import av
import httpx
import numpy as np
import numpy.typing as npt
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtpPacket

from actors.media.aiortc import rtc
from actors.media.session import PublishSession, ViewSession
from actors.media.sfu import Forwarder
from loadtests.webrtc import (
    accept_answer,
    begin_ice_restart,
    finish_ice_restart,
    receiving_peer,
    sending_peer,
)
from loadtests.webrtc import local_offer as local_offer  # for the tests that offer by hand

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


@dataclass
class Sender:
    """A peer sending the indexed video and a tone (either may be left out)."""

    pc: rtc.ScopedPeerConnection
    video: IndexedVideoTrack | None
    audio: ToneAudioTrack | None

    async def close(self) -> None:
        await self.pc.close()


def sender(
    *, video: bool = True, audio: bool = True, fps: int = FPS, video_codec: str | None = None
) -> Sender:
    video_track = IndexedVideoTrack(fps) if video else None
    audio_track = ToneAudioTrack() if audio else None
    mime_types = (video_codec, "video/rtx") if video_codec else ()
    pc = sending_peer(LOOPBACK, (audio_track, video_track), video_mime_types=mime_types)
    return Sender(pc, video_track, audio_track)


@dataclass
class Receiver:
    """A peer that decodes what it receives: the indices of the video frames, the audio level."""

    pc: rtc.ScopedPeerConnection
    indices: list[tuple[int, float]] = field(default_factory=list)  # (index, arrival)
    audio_frames: int = 0
    audio_peak: float = 0.0
    ended: set[str] = field(default_factory=set)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self.tasks.append(asyncio.ensure_future(self._consume(track)))

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


# -- a forwarder in the test's process -------------------------------------------------


@dataclass
class Publisher(Sender):
    session: PublishSession = field(kw_only=True)

    async def restart_ice(self, forwarder: Forwarder, hosts: Sequence[str]) -> bool:
        """Move to `hosts` by an ICE restart, the fragments handed to the forwarder directly."""
        restart, fragment = await begin_ice_restart(self.pc, hosts)
        answer = await forwarder.patch(self.session.id, fragment)
        assert answer is not None, "no ICE restart answer"
        return await finish_ice_restart(self.pc, restart, answer)


async def publish(
    forwarder: Forwarder,
    *,
    video: bool = True,
    audio: bool = True,
    source: Any = "camera",
    fps: int = FPS,
    video_codec: str | None = None,
) -> Publisher:
    peer = sender(video=video, audio=audio, fps=fps, video_codec=video_codec)
    answer, session = await forwarder.publish(await local_offer(peer.pc), source=source)
    await accept_answer(peer.pc, answer)
    return Publisher(peer.pc, peer.video, peer.audio, session=session)


@dataclass
class Viewer(Receiver):
    session: ViewSession = field(kw_only=True)


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
            rtc.filter_incoming_rtp(transport, self._arrive)

    def _arrive(self, data: bytes) -> bool:
        payload_type = data[1] & 0x7F
        seq, ssrc = struct.unpack_from("!H", data, 2)[0], struct.unpack_from("!L", data, 8)[0]
        lossy = self._lose is not None and (ssrc, seq) not in self.lost
        if lossy and self._lose is not None and self._lose(payload_type, seq):
            self.lost.add((ssrc, seq))
            return False
        self.packets.append(RtpPacket.parse(data))
        return True

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
    pc = receiving_peer(LOOPBACK, kinds)
    answer, session = await forwarder.subscribe(await local_offer(pc), sources)
    viewer = Viewer(pc, session=session)
    if link is not None:
        link.learn(answer)
        link.install(pc)
    await accept_answer(pc, answer)
    return viewer


# -- the gateway's WHIP and WHEP endpoints ----------------------------------------------

SDP = {"content-type": "application/sdp"}


async def post_offer(
    http: httpx.AsyncClient, url: str, headers: Mapping[str, str], offer: str
) -> httpx.Response:
    return await http.post(url, content=offer, headers={**headers, **SDP})


@dataclass
class WhipPublisher(Sender):
    response: httpx.Response = field(kw_only=True)
    etag: str = field(kw_only=True, default="")

    def __post_init__(self) -> None:
        self.etag = self.etag or self.response.headers.get("etag", "")

    @property
    def location(self) -> str:
        return self.response.headers["location"]

    @property
    def session_id(self) -> str:
        return self.location.rsplit("/", 1)[1]

    async def restart_ice(
        self,
        http: httpx.AsyncClient,
        headers: Mapping[str, str],
        hosts: Sequence[str],
        *,
        etag: str | None = None,
    ) -> httpx.Response:
        """Move to `hosts` (a new network) by an ICE restart through PATCH (RFC 9725
        section 4.3.2), with `etag` or the session's last ETag; on 200 the checks run
        and the new ETag is kept. The response is returned whatever its status."""
        restart, fragment = await begin_ice_restart(self.pc, hosts)
        patch_headers = {
            **headers,
            "content-type": "application/trickle-ice-sdpfrag",
            "if-match": etag or self.etag,
        }
        response = await http.patch(self.location, content=fragment, headers=patch_headers)
        if response.status_code != 200:
            await restart.abandon()
            return response
        self.etag = response.headers["etag"]
        if not await finish_ice_restart(self.pc, restart, response.text):
            raise AssertionError("the ICE restart found no new pair")
        return response


async def whip_publish(
    http: httpx.AsyncClient,
    url: str,
    headers: Mapping[str, str],
    *,
    video: bool = True,
    audio: bool = True,
) -> WhipPublisher:
    """POST an offer; on 201 apply the answer. The response is kept whatever its status."""
    peer = sender(video=video, audio=audio)
    response = await post_offer(http, url, headers, await local_offer(peer.pc))
    if response.status_code == 201:
        await accept_answer(peer.pc, response.text)
    return WhipPublisher(peer.pc, peer.video, peer.audio, response=response)


@dataclass
class WhepViewer(Receiver):
    response: httpx.Response = field(kw_only=True)

    @property
    def location(self) -> str:
        return self.response.headers["location"]


async def whep_watch(
    http: httpx.AsyncClient,
    url: str,
    headers: Mapping[str, str],
    kinds: Sequence[str] = ("audio", "video"),
) -> WhepViewer:
    """POST an offer; on 201 apply the answer. The response is kept whatever its status."""
    pc = receiving_peer(LOOPBACK, kinds)
    viewer = WhepViewer(pc, response=await post_offer(http, url, headers, await local_offer(pc)))
    if viewer.response.status_code == 201:
        await accept_answer(pc, viewer.response.text)
    return viewer
