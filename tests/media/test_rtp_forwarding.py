"""What a viewer gets on the wire from RTP-level forwarding, seen at its end of the link."""

from __future__ import annotations

import itertools

import pytest
from aiortc import RTCPeerConnection
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpSendParameters,
)
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from actors.media.aiortc import rtc
from actors.media.aiortc.rtp_output import URI_ABS_SEND_TIME, URI_AUDIO_LEVEL, URI_MID, RtpOutput
from actors.media.fanout import ForwardTrack
from tests.media.conftest import Stage
from tests.media.test_forwarding import assert_in_order
from tests.support.wait import until
from tests.support.webrtc import RtpLink


def assert_continuous(packets: list[RtpPacket]) -> None:
    """One SSRC, each sequence number the last plus one, timestamps never going back."""
    assert packets
    assert len({p.ssrc for p in packets}) == 1
    for a, b in itertools.pairwise(packets):
        assert (b.sequence_number - a.sequence_number) & 0xFFFF == 1, (a, b)
        assert (b.timestamp - a.timestamp) & 0xFFFFFFFF < 1 << 31, (a, b)


def starts_keyframe(packet: RtpPacket) -> bool:
    descriptor, rest = VpxPayloadDescriptor.parse(packet.payload)
    # RFC 7741: the start of partition 0, and RFC 6386: the frame tag's P bit 0.
    return bool(descriptor.partition_start) and descriptor.partition_id == 0 and not rest[0] & 1


async def test_a_viewer_joining_mid_stream_starts_on_a_keyframe_with_no_gap(
    stage: Stage,
) -> None:
    forwarder = stage.forwarder()
    publisher = await stage.publish(forwarder)
    early = await stage.view(forwarder, [publisher.session.id])
    await until(lambda: len(early.indices) >= 30)

    link = RtpLink()
    late = await stage.view(forwarder, [publisher.session.id], link=link)
    await until(lambda: len(late.indices) >= 15 and late.audio_frames >= 20)

    video = link.of("vp8")
    assert starts_keyframe(video[0]), video[0]
    assert_continuous(video)
    assert_continuous(link.of("opus"))
    assert_in_order([index for index, _ in late.indices])
    assert late.indices[0][0] > early.indices[0][0] + 25  # it did join mid-stream
    receiver = next(t.receiver for t in late.pc.getTransceivers() if t.kind == "video")
    inbound = [s for s in (await receiver.getStats()).values() if s.type == "inbound-rtp"]
    assert inbound[0].packetsLost == 0  # the viewer's own count agrees
    # The shard's stats count what it wrote around aiortc's send path (RTCP on top).
    sent = list((await late.session.pc.getStats()).values())
    rtp_sent = sum(s.packetsSent for s in sent if s.type == "outbound-rtp")
    transport = [s for s in sent if s.type == "transport"]
    assert rtp_sent >= len(video)
    assert transport[0].packetsSent >= rtp_sent
    assert transport[0].bytesSent > sum(s.bytesSent for s in sent if s.type == "outbound-rtp")


async def test_a_nack_from_a_viewer_is_answered_from_the_history(stage: Stage) -> None:
    forwarder = stage.forwarder()
    publisher = await stage.publish(forwarder, audio=False)
    vp8: list[int] = []

    def lose(payload_type: int, seq: int) -> bool:
        return bool(vp8) and payload_type == vp8[0] and seq % 10 == 3

    link = RtpLink(lose)
    viewer = await stage.view(forwarder, [publisher.session.id], kinds=("video",), link=link)
    vp8.append(link.payload_types["vp8"])
    await until(lambda: len(link.lost) >= 12 and len(viewer.indices) >= 45, within=20)

    # Every frame arrived whole, in order: each lost packet came again.
    indices = [index for index, _ in viewer.indices]
    assert indices == list(range(indices[0], indices[0] + len(indices)))

    def resent() -> set[int]:
        return {int.from_bytes(p.payload[:2], "big") for p in link.of("rtx")}

    # The repairs are resends of lost packets, from the history, as RTX. Not every loss
    # so far: the link goes on losing packets, and on a busy machine a repair that comes
    # too late for the history (128 packets) is given up for a keyframe, as it should be;
    # the frames above decoded whole, so the losses inside them were repaired.
    lost = {seq for _, seq in link.lost}
    await until(lambda: len(lost & resent()) >= 11)
    stats = await forwarder.stats()
    assert stats["rtp_retransmissions"] >= len(resent()) >= 11
    assert stats["encodes"] == 0


async def test_a_resynchronised_viewer_continues_its_sequence(stage: Stage) -> None:
    forwarder = stage.forwarder()
    publisher = await stage.publish(forwarder, audio=False)
    link = RtpLink()
    viewer = await stage.view(forwarder, [publisher.session.id], kinds=("video",), link=link)
    await until(lambda: len(viewer.indices) >= 15)
    track = viewer.session.tracks[0]
    assert isinstance(track, ForwardTrack)
    video = publisher.session.tracks["video"]
    keyframes, seen = video.keyframes_in, len(viewer.indices)

    # As when the publisher restarts its stream: wait for a keyframe, then go on.
    # The publisher answers no keyframe request for a while, so frames are skipped.
    sender = next(s for s in publisher.pc.getSenders() if s.kind == "video")
    with rtc.keyframe_requests_ignored(sender):
        track.resync()
        await until(lambda: track.dropped >= 5)
    # aiortc's own again: the next relayed request is answered
    await until(lambda: video.keyframes_in > keyframes and len(viewer.indices) >= seen + 15)

    assert video.keyframe_requests_sent >= 2  # the waiting viewer asked again
    assert_continuous(link.of("vp8"))  # frames were skipped, yet no gap in what it got
    indices = [index for index, _ in viewer.indices]
    assert all(b > a for a, b in itertools.pairwise(indices))  # decoded on, in order
    assert sum(b - a > 1 for a, b in itertools.pairwise(indices)) == 1  # one jump, at the resync
    assert sum(starts_keyframe(p) for p in link.of("vp8")) >= 2


@pytest.mark.parametrize(
    ("ids", "mid", "level"),
    [
        ({URI_MID: 1, URI_ABS_SEND_TIME: 2}, "0", None),  # aiortc's video
        ({URI_MID: 9, URI_AUDIO_LEVEL: 1}, "1", (True, 42)),  # audio, voice active
        ({URI_MID: 3, URI_AUDIO_LEVEL: 14}, "audio-long-mid-1", None),  # no level sent
        ({URI_MID: 15, URI_ABS_SEND_TIME: 2}, "0", None),  # two-byte header form
        ({}, "0", None),  # none negotiated
    ],
)
async def test_header_extensions_are_written_as_aiortc_writes_them(
    ids: dict[str, int], mid: str, level: tuple[bool, int] | None
) -> None:
    pc = RTCPeerConnection()
    try:
        sender = pc.addTransceiver("video").sender
        output = RtpOutput(sender, lambda: None)
        parameters = RTCRtpSendParameters(
            codecs=[RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)],
            headerExtensions=[RTCRtpHeaderExtensionParameters(id=i, uri=u) for u, i in ids.items()],
            muxId=mid,
        )
        output._configure(parameters)  # what the sender's `send` gets from aiortc
        abs_time = 0x123456
        ours = output.extension(abs_time.to_bytes(3, "big"), level)

        expected = RtpPacket(payload_type=97, payload=b"x")
        expected.extensions.mid = mid
        expected.extensions.abs_send_time = abs_time
        expected.extensions.audio_level = level
        extensions_map = HeaderExtensionsMap()
        extensions_map.configure(parameters)
        # aiortc's bytes after the 12-byte fixed header, up to the payload.
        assert ours == expected.serialize(extensions_map)[12:-1]
    finally:
        await pc.close()
