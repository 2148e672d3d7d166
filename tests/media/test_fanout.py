"""The fan-out on its own: keyframe detection on real bitstreams, viewer pacing.

A viewer that falls behind cannot be produced on loopback, so these tests
drive a `ForwardTrack` directly, with frames from a real encoder.
"""

from __future__ import annotations

import asyncio
import fractions
from typing import Literal

import av
import pytest
from aiortc import RTCRtpSender
from aiortc.mediastreams import MediaStreamError

from actors.fanout import ForwardTrack, PublishedTrack, is_keyframe
from tests.media.peers import draw_index


def encode_flagged(
    codec: Literal["libvpx", "libx264"], frames: int, gop: int
) -> list[tuple[bytes, bool]]:
    """Encoded frames and whether the encoder says each is a keyframe."""
    encoder = av.CodecContext.create(codec, "w")
    encoder.width, encoder.height, encoder.pix_fmt = 320, 240, "yuv420p"
    encoder.time_base = fractions.Fraction(1, 15)
    encoder.gop_size = gop
    if codec == "libx264":
        encoder.options = {"tune": "zerolatency", "bframes": "0"}
    out = []
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(draw_index(i * 97), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = i
        # aiortc's depayloaders hand over Annex B for H.264, as libx264 writes it.
        out += [(bytes(p), bool(p.is_keyframe)) for p in encoder.encode(frame)]
    return out + [(bytes(p), bool(p.is_keyframe)) for p in encoder.encode(None)]


def encode(codec: Literal["libvpx", "libx264"], frames: int, gop: int) -> list[bytes]:
    return [data for data, _ in encode_flagged(codec, frames, gop)]


@pytest.mark.parametrize("codec", ["libvpx", "libx264"])
def test_keyframes_are_found_in_the_bitstream(codec: Literal["libvpx", "libx264"]) -> None:
    name = "vp8" if codec == "libvpx" else "h264"
    frames = encode_flagged(codec, 12, gop=5)
    assert [is_keyframe(name, data) for data, _ in frames] == [key for _, key in frames]
    assert 2 <= sum(key for _, key in frames) < 12


class PliCounter:
    def __init__(self) -> None:
        self.sent = 0

    async def __call__(self) -> None:
        self.sent += 1


def video_track(pli: PliCounter, interval: float = 0.5) -> PublishedTrack:
    vp8 = next(c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == "video/VP8")
    return PublishedTrack(
        session_id="s",
        source="camera",
        kind="video",
        codec=vp8,
        send_pli=pli,
        keyframe_interval_s=interval,
    )


async def test_a_viewer_starts_on_a_keyframe_and_resyncs_when_behind() -> None:
    frames = encode("libvpx", 40, gop=10)
    pli = PliCounter()
    source = video_track(pli, interval=60)  # requests repeat only once answered
    viewer = ForwardTrack(source, queue_frames=8)

    source.push(frames[1], 3000)  # before the sender asked: not queued
    first = asyncio.ensure_future(viewer.recv())  # the sender starts reading...
    await asyncio.sleep(0)  # ...and asks for a keyframe
    source.push(frames[2], 6000)  # a delta frame cannot start a stream
    source.push(frames[10], 30000)
    packet = await first
    assert (packet.pts, bytes(packet)) == (30000, frames[10])
    assert viewer.dropped == 1
    assert source.keyframe_requests_sent == 1

    for i in range(11, 20):  # the sender stalls: the queue overflows
        source.push(frames[i], i * 3000)
    assert viewer.dropped == 1 + 9  # 8 queued, and the delta frame that overflowed
    assert source.keyframe_requests_sent == 2
    source.push(frames[20], 60000)  # the requested keyframe
    assert (await viewer.recv()).pts == 60000
    await asyncio.sleep(0)  # let the PLI tasks run
    assert pli.sent == 2


async def test_pts_stay_monotonic_and_requests_are_not_repeated() -> None:
    frames = encode("libvpx", 3, gop=10)
    pli = PliCounter()
    source = video_track(pli, interval=60)
    viewer = ForwardTrack(source, queue_frames=8)
    first = asyncio.ensure_future(viewer.recv())
    await asyncio.sleep(0)
    source.push(frames[0], 9000)
    source.push(frames[1], 9000)  # a publisher whose clock went back
    assert (await first).pts == 9000
    assert (await viewer.recv()).pts == 9001
    # An outstanding request is not repeated within the interval...
    assert source.request_keyframe() is True
    assert source.request_keyframe() is False
    # ...but a keyframe arriving answers it, so the next request goes out.
    source.push(frames[0], 12000)
    assert source.request_keyframe() is True
    assert source.keyframe_requests_sent == 3


async def test_the_end_reaches_every_viewer() -> None:
    source = video_track(PliCounter())
    viewers = [ForwardTrack(source, queue_frames=8) for _ in range(2)]
    source.end()
    late = ForwardTrack(source, queue_frames=8)  # joins after the end
    for viewer in [*viewers, late]:
        with pytest.raises(MediaStreamError):
            await viewer.recv()


async def test_a_waiting_viewer_asks_again_when_a_request_went_unanswered() -> None:
    frames = encode("libvpx", 3, gop=10)
    source = video_track(PliCounter(), interval=0.05)
    viewer = ForwardTrack(source, queue_frames=8)
    first = asyncio.ensure_future(viewer.recv())
    await asyncio.sleep(0)
    assert source.keyframe_requests_sent == 1
    source.push(frames[1], 3000)  # no keyframe yet, and the request is recent
    assert source.keyframe_requests_sent == 1
    await asyncio.sleep(0.1)  # the PLI (or the keyframe) was lost on the way
    source.push(frames[2], 6000)
    assert source.keyframe_requests_sent == 2
    source.push(frames[0], 9000)
    assert (await first).pts == 9000


class BrokenSink:
    def on_frame(self, track: PublishedTrack, frame: object) -> None:
        raise RuntimeError("a bug in some consumer")

    def on_end(self, track: PublishedTrack) -> None:
        raise RuntimeError("and another")


async def test_a_failing_consumer_does_not_starve_the_others() -> None:
    frames = encode("libvpx", 1, gop=10)
    source = video_track(PliCounter())
    source.add_sink(BrokenSink())
    viewer = ForwardTrack(source, queue_frames=8)
    first = asyncio.ensure_future(viewer.recv())
    await asyncio.sleep(0)
    source.push(frames[0], 3000)
    assert (await first).pts == 3000
    source.end()
    with pytest.raises(MediaStreamError):
        await viewer.recv()
