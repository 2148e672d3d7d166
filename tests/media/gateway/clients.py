"""WHIP and WHEP clients of the real gateway: aiortc peers on loopback, offers over HTTP.

The publisher sends the test peers' indexed video (each frame shows its own
index) and a tone; the viewer decodes what it gets and reads the indices.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import av
import httpx
import numpy as np
from aiortc import RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from actors.media.aiortc import rtc
from tests.media.peers import LOOPBACK, IndexedVideoTrack, ToneAudioTrack, local_offer, read_index

SDP = {"content-type": "application/sdp"}


async def post_offer(
    http: httpx.AsyncClient, url: str, headers: Mapping[str, str], offer: str
) -> httpx.Response:
    return await http.post(url, content=offer, headers={**headers, **SDP})


@dataclass
class Publisher:
    pc: rtc.ScopedPeerConnection
    video: IndexedVideoTrack | None
    audio: ToneAudioTrack | None
    response: httpx.Response

    @property
    def location(self) -> str:
        return self.response.headers["location"]

    @property
    def session_id(self) -> str:
        return self.location.rsplit("/", 1)[1]

    async def close(self) -> None:
        await self.pc.close()


def publisher_pc(*, video: bool = True, audio: bool = True) -> Publisher:
    pc = rtc.ScopedPeerConnection(LOOPBACK)
    video_track = IndexedVideoTrack() if video else None
    audio_track = ToneAudioTrack() if audio else None
    for track in (audio_track, video_track):
        if track is not None:
            pc.addTransceiver(track, direction="sendonly")
    return Publisher(pc, video_track, audio_track, httpx.Response(0))


async def publish(
    http: httpx.AsyncClient,
    url: str,
    headers: Mapping[str, str],
    *,
    video: bool = True,
    audio: bool = True,
) -> Publisher:
    """POST an offer; on 201 apply the answer. The response is kept whatever its status."""
    publisher = publisher_pc(video=video, audio=audio)
    publisher.response = await post_offer(http, url, headers, await local_offer(publisher.pc))
    if publisher.response.status_code == 201:
        answer = RTCSessionDescription(sdp=publisher.response.text, type="answer")
        await publisher.pc.setRemoteDescription(answer)
    return publisher


@dataclass
class Viewer:
    pc: rtc.ScopedPeerConnection
    response: httpx.Response
    indices: list[tuple[int, float]] = field(default_factory=list)  # (index, arrival)
    audio_frames: int = 0
    audio_peak: float = 0.0
    ended: set[str] = field(default_factory=set)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def location(self) -> str:
        return self.response.headers["location"]

    async def close(self) -> None:
        await self.pc.close()
        for task in self.tasks:
            task.cancel()

    async def consume(self, track: MediaStreamTrack) -> None:
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


async def watch(
    http: httpx.AsyncClient,
    url: str,
    headers: Mapping[str, str],
    kinds: Sequence[str] = ("audio", "video"),
) -> Viewer:
    pc = rtc.ScopedPeerConnection(LOOPBACK)
    for kind in kinds:
        pc.addTransceiver(kind, direction="recvonly")
    viewer = Viewer(pc, await post_offer(http, url, headers, await local_offer(pc)))

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        viewer.tasks.append(asyncio.ensure_future(viewer.consume(track)))

    if viewer.response.status_code == 201:
        answer = RTCSessionDescription(sdp=viewer.response.text, type="answer")
        await pc.setRemoteDescription(answer)
    return viewer


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    """Wait for an async `check`; fail if it does not hold within `within` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.1)
