"""The fan-out on its own: keyframes in real bitstreams and RTP packets, keyframe requests.

Packets come from aiortc's own packetizers fed by real encoders, so what is
checked here is what a publisher's receiver hands the forwarder.
"""

from __future__ import annotations

import asyncio
import fractions
import itertools
from typing import Any, Literal

import av
import numpy as np
import pytest
from aiortc import RTCRtpSender
from aiortc.codecs import get_encoder
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket

from actors.media.fanout import EncodedFrame, ForwardTrack, PublishedTrack, is_keyframe
from actors.media.rtp_forward import keyframe_start
from tests.support.webrtc import draw_index


def encode_flagged(
    codec: Literal["libvpx", "libx264"], frames: int, gop: int, noisy: bool = False
) -> list[tuple[bytes, bool]]:
    """Encoded frames and whether the encoder says each is a keyframe.

    Noisy frames are large enough to take several RTP packets each.
    """
    rng = np.random.default_rng(3)
    encoder = av.CodecContext.create(codec, "w")
    encoder.width, encoder.height, encoder.pix_fmt = 320, 240, "yuv420p"
    encoder.time_base = fractions.Fraction(1, 15)
    encoder.gop_size = gop
    if codec == "libx264":
        encoder.options = {"tune": "zerolatency", "bframes": "0"}
    out = []
    for i in range(frames):
        image = draw_index(i * 97)
        if noisy:
            image = image // 2 + rng.integers(0, 128, image.shape, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = i
        # aiortc's depayloaders hand over Annex B for H.264, as libx264 writes it.
        out += [(bytes(p), bool(p.is_keyframe)) for p in encoder.encode(frame)]
    return out + [(bytes(p), bool(p.is_keyframe)) for p in encoder.encode(None)]


def capability(mime: str) -> Any:
    kind = mime.split("/")[0]
    return next(c for c in RTCRtpSender.getCapabilities(kind).codecs if c.mimeType == mime)


def packetize(mime: str, frames: list[tuple[bytes, bool]]) -> list[tuple[RtpPacket, bool]]:
    """RTP packets as aiortc's sender makes them, each with its frame's keyframe flag."""
    packer = get_encoder(capability(mime))
    packets = []
    seq = itertools.count(1000)
    for index, (data, keyframe) in enumerate(frames):
        packet = av.Packet(data)
        packet.pts, packet.time_base = index, fractions.Fraction(1, 15)
        payloads, timestamp = packer.pack(packet)
        for i, payload in enumerate(payloads):
            rtp = RtpPacket(96, int(i == len(payloads) - 1), next(seq), timestamp, 1234, payload)
            packets.append((rtp, keyframe))
    return packets


@pytest.mark.parametrize("codec", ["libvpx", "libx264"])
def test_keyframes_are_found_in_the_bitstream(codec: Literal["libvpx", "libx264"]) -> None:
    name = "vp8" if codec == "libvpx" else "h264"
    frames = encode_flagged(codec, 12, gop=5)
    assert [is_keyframe(name, data) for data, _ in frames] == [key for _, key in frames]
    assert 2 <= sum(key for _, key in frames) < 12


@pytest.mark.parametrize(("codec", "mime"), [("libvpx", "video/VP8"), ("libx264", "video/H264")])
def test_keyframe_starts_are_found_in_rtp_packets(
    codec: Literal["libvpx", "libx264"], mime: str
) -> None:
    frames = encode_flagged(codec, 12, gop=5, noisy=True)
    packets = packetize(mime, frames)
    assert len(packets) > len(frames)  # some frames span several packets
    previous: int | None = None
    found = []
    for packet, keyframe in packets:
        new_frame = packet.timestamp != previous
        previous = packet.timestamp
        # Only the first packet of a keyframe starts a decodable stream.
        found.append(keyframe_start(mime.split("/")[1].lower(), packet.payload, new_frame))
        assert found[-1] == (keyframe and new_frame), packet
    assert sum(found) == sum(key for _, key in frames)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"picture_id": 17},
        {"picture_id": 4000},
        {"picture_id": 4000, "tl0picidx": 3},
        {"picture_id": 5, "tl0picidx": 3, "tid": (1, 1), "keyidx": 2},
        {"keyidx": 2},
    ],
)
def test_vp8_payload_descriptors_of_every_shape(fields: dict[str, object]) -> None:
    key, delta = (encode_flagged("libvpx", 2, gop=10)[i][0] for i in (0, 1))
    for data, partition_start, partition_id, expected in [
        (key, 1, 0, True),
        (delta, 1, 0, False),
        (key, 0, 0, False),  # a continuation of the frame
        (key, 1, 1, False),  # a later partition
    ]:
        descriptor = VpxPayloadDescriptor(partition_start, partition_id, **fields)  # type: ignore[arg-type]
        payload = bytes(descriptor) + data[:40]
        parsed, rest = VpxPayloadDescriptor.parse(payload)
        # aiortc reads the descriptor as we wrote it
        assert (parsed.partition_start, parsed.partition_id, rest) == (
            partition_start,
            partition_id,
            data[:40],
        )
        assert keyframe_start("vp8", payload, True) is expected


class PliCounter:
    def __init__(self) -> None:
        self.sent = 0

    async def __call__(self) -> None:
        self.sent += 1


def video_track(pli: PliCounter, interval: float = 0.5) -> PublishedTrack:
    return PublishedTrack(
        session_id="s",
        source="camera",
        kind="video",
        codec=capability("video/VP8"),
        send_pli=pli,
        keyframe_interval_s=interval,
    )


async def test_keyframe_requests_are_not_repeated_until_a_keyframe_comes() -> None:
    packets = packetize("video/VP8", encode_flagged("libvpx", 12, gop=10, noisy=True))
    pli = PliCounter()
    source = video_track(pli, interval=60)
    assert source.request_keyframe() is True
    assert source.request_keyframe() is False  # outstanding, within the interval
    for packet, _ in packets[: len(packets) // 2]:
        source.on_rtp(packet)  # frame 0 is a keyframe: it answers the request
    assert source.keyframes_in == 1
    assert source.request_keyframe() is True
    await asyncio.sleep(0)  # let the PLI tasks run
    assert pli.sent == source.keyframe_requests_sent == 2


async def test_a_late_retransmission_of_a_keyframe_starts_nobody() -> None:
    packets = packetize("video/VP8", encode_flagged("libvpx", 3, gop=10, noisy=True))
    source = video_track(PliCounter())
    for packet, _ in packets:
        source.on_rtp(packet)
    assert source.keyframes_in == 1
    source.on_rtp(packets[0][0])  # the keyframe's first packet again, resent after a NACK
    assert source.keyframes_in == 1
    assert source.frames_in == 3


async def test_frames_are_assembled_only_while_a_frame_sink_wants_them() -> None:
    packets = packetize("video/VP8", encode_flagged("libvpx", 1, gop=10))
    source = video_track(PliCounter())
    assert source.on_rtp(packets[0][0]) is False  # viewers alone need no frames
    sink = Collector()
    source.add_sink(sink)
    assert source.on_rtp(packets[0][0]) is True


class Collector:
    def __init__(self) -> None:
        self.frames: list[EncodedFrame] = []
        self.ended = False

    def on_frame(self, track: PublishedTrack, frame: EncodedFrame) -> None:
        self.frames.append(frame)

    def on_end(self, track: PublishedTrack) -> None:
        self.ended = True


class BrokenSink:
    def on_frame(self, track: PublishedTrack, frame: object) -> None:
        raise RuntimeError("a bug in some consumer")

    def on_end(self, track: PublishedTrack) -> None:
        raise RuntimeError("and another")


async def test_a_failing_consumer_does_not_starve_the_others() -> None:
    frames = encode_flagged("libvpx", 2, gop=10)
    source = video_track(PliCounter())
    source.add_sink(BrokenSink())
    sink = Collector()
    source.add_sink(sink)
    viewer = ForwardTrack(source)
    source.push(frames[0][0], 3000)
    source.push(frames[1][0], 6000)
    assert [(f.timestamp, f.keyframe) for f in sink.frames] == [(3000, True), (6000, False)]
    source.end()
    assert sink.ended
    with pytest.raises(MediaStreamError):
        await viewer.recv()


async def test_the_end_reaches_every_viewer() -> None:
    source = video_track(PliCounter())
    viewers = [ForwardTrack(source) for _ in range(2)]
    waiting = asyncio.ensure_future(viewers[0].recv())  # a sender idling on its track
    await asyncio.sleep(0)
    source.end()
    late = ForwardTrack(source)  # joins after the end
    with pytest.raises(MediaStreamError):
        await waiting
    for viewer in [*viewers, late]:
        with pytest.raises(MediaStreamError):
            await viewer.recv()
    assert source.viewers == ()
