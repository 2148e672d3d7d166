"""Forwarding through the SFU between real aiortc peers on loopback."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from aiortc.codecs.opus import OpusDecoder, OpusEncoder
from aiortc.codecs.vpx import Vp8Decoder, Vp8Encoder

from actors.media.aiortc import rtc
from infra.errors import NotFound
from tests.media.conftest import Stage
from tests.support.wait import until
from tests.support.webrtc import LOOPBACK, local_offer


def assert_in_order(indices: list[int]) -> None:
    assert indices, "no video frame decoded"
    assert all(b > a for a, b in itertools.pairwise(indices)), indices
    # Loopback loses nothing: after the first frame, hardly any index is missing.
    span = indices[-1] - indices[0] + 1
    assert len(indices) >= 0.9 * span, (len(indices), span)


async def test_viewer_gets_publisher_frames_in_order_with_low_latency(stage: Stage) -> None:
    forwarder = stage.forwarder()
    publisher = await stage.publish(forwarder)
    viewer = await stage.view(forwarder, [publisher.session.id])
    await until(lambda: len(viewer.indices) >= 45 and viewer.audio_frames >= 50)

    indices = [index for index, _ in viewer.indices]
    assert_in_order(indices)
    assert publisher.video is not None
    latencies = [arrived - publisher.video.sent_at[i] for i, arrived in viewer.indices]
    median = statistics.median(latencies)
    print(
        f"\nend-to-end latency over {len(latencies)} frames: median {median * 1000:.0f} ms, "
        f"max {max(latencies) * 1000:.0f} ms"
    )
    assert median < 1.0
    assert viewer.audio_peak > 1000  # the tone, not silence
    stats = await forwarder.stats()
    assert stats["frames_forwarded"] >= 45 + 50
    assert stats["encodes"] == 0
    assert stats["decodes"] == 0


class CodecCalls:
    """Counts codec work per codec object, in the whole process."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: Counter[tuple[str, int]] = Counter()
        for cls, method in (
            (Vp8Encoder, "encode"),
            (OpusEncoder, "encode"),
            (Vp8Decoder, "decode"),
            (OpusDecoder, "decode"),
        ):
            monkeypatch.setattr(cls, method, self._counting(cls.__name__, getattr(cls, method)))

    def _counting(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def counted(codec: object, *args: Any, **kwargs: Any) -> Any:
            self.calls[name, id(codec)] += 1
            return method(codec, *args, **kwargs)

        return counted

    def instances(self, name: str) -> int:
        return sum(1 for (n, _), count in self.calls.items() if n == name and count)


async def test_forwarding_does_no_decode_or_encode(
    stage: Stage, monkeypatch: pytest.MonkeyPatch
) -> None:
    codec = CodecCalls(monkeypatch)
    forwarder = stage.forwarder()
    publisher = await stage.publish(forwarder)
    viewers = [await stage.view(forwarder, [publisher.session.id]) for _ in range(2)]
    await until(lambda: all(len(v.indices) >= 20 and v.audio_frames >= 30 for v in viewers))

    # The test's own peers did their normal work: one encoder per kind in the
    # publisher, one decoder per kind in each viewer. Anything the SFU did
    # would show up as more codec objects at work.
    assert codec.instances("Vp8Encoder") == 1
    assert codec.instances("OpusEncoder") == 1
    assert codec.instances("Vp8Decoder") == 2
    assert codec.instances("OpusDecoder") == 2
    stats = await forwarder.stats()
    assert stats["encodes"] == 0
    assert stats["decodes"] == 0
    assert stats["frames_forwarded"] >= 2 * (20 + 30)


async def test_late_viewer_gets_a_keyframe_promptly(stage: Stage) -> None:
    forwarder = stage.forwarder()
    publisher = await stage.publish(forwarder)
    early = await stage.view(forwarder, [publisher.session.id])
    await until(lambda: len(early.indices) >= 30)  # aiortc's encoder sends no keyframe unasked
    video = publisher.session.tracks["video"]
    keyframes_before, requests_before = video.keyframes_in, video.keyframe_requests_sent

    joined = time.monotonic()
    late = await stage.view(forwarder, [publisher.session.id])
    await until(lambda: len(late.indices) >= 5)
    print(f"\nlate viewer decoded its first frames {time.monotonic() - joined:.2f} s after joining")
    assert_in_order([index for index, _ in late.indices])
    assert late.indices[0][0] > early.indices[0][0] + 25  # it started mid-stream
    assert video.keyframe_requests_sent > requests_before
    assert video.keyframes_in > keyframes_before


async def test_viewer_keyframe_request_is_relayed_to_publisher(stage: Stage) -> None:
    forwarder = stage.forwarder()
    publisher = await stage.publish(forwarder)
    viewer = await stage.view(forwarder, [publisher.session.id], kinds=("video",))
    await until(lambda: len(viewer.indices) >= 10)
    video = publisher.session.tracks["video"]
    keyframes = video.keyframes_in  # the viewer's first keyframe came: no request is pending

    receiver = viewer.pc.getReceivers()[0]
    ssrc = rtc.receiving_ssrc(receiver)
    assert ssrc is not None
    await rtc.request_keyframe(receiver, ssrc)  # a real RTCP PLI from the viewer
    await until(lambda: video.keyframes_in > keyframes)
    stats = await forwarder.stats()
    assert stats["keyframe_requests_relayed"] >= 1


async def test_viewers_come_and_go_and_see_the_publisher_leave(stage: Stage) -> None:
    forwarder = stage.forwarder()
    publisher = await stage.publish(forwarder)
    leaving = await stage.view(forwarder, [publisher.session.id])
    staying = await stage.view(forwarder, [publisher.session.id])
    await until(lambda: len(leaving.indices) >= 10 and len(staying.indices) >= 10)

    await leaving.close()
    await until(lambda: leaving.session.id not in forwarder._sessions)
    seen = len(staying.indices)
    await until(lambda: len(staying.indices) >= seen + 15)
    assert_in_order([index for index, _ in staying.indices])

    await publisher.close()
    await until(lambda: staying.ended == {"audio", "video"})
    await until(lambda: forwarder.live_peer_connections == 0)


async def test_talkback_audio_reaches_the_candidate(stage: Stage) -> None:
    forwarder = stage.forwarder()
    proctor = await stage.publish(forwarder, video=False, source="talkback")
    # A WHEP client offering audio and video: the video m-line is answered inactive.
    candidate = await stage.view(forwarder, [proctor.session.id], kinds=("audio", "video"))
    await until(lambda: candidate.audio_frames >= 50)
    directions = [t.currentDirection for t in candidate.pc.getTransceivers()]
    assert directions == ["recvonly", "inactive"]
    assert candidate.audio_peak > 1000
    stats = await forwarder.stats()
    assert stats["encodes"] == 0
    assert stats["decodes"] == 0


async def test_a_source_ending_while_a_viewer_is_answered_is_a_clean_404(stage: Stage) -> None:
    """The publisher leaves while the SFU is still answering a viewer of it: the viewer
    gets `not_publishing`, as if it had come a moment later, and nothing is left open."""
    forwarder = stage.forwarder()
    publisher = await stage.publish(forwarder)
    pc = rtc.ScopedPeerConnection(LOOPBACK)
    try:
        for kind in ("audio", "video"):
            pc.addTransceiver(kind, direction="recvonly")
        offer = await local_offer(pc)
        answering = asyncio.ensure_future(forwarder.subscribe(offer, [publisher.session.id]))
        # Until the viewer's session exists (mid-answer); the SFU signals no such moment.
        while len(forwarder._sessions) < 2:  # noqa: ASYNC110
            await asyncio.sleep(0)
        await forwarder.close_session(publisher.session.id)
        with pytest.raises(NotFound) as refused:
            await answering
        assert refused.value.reason == "not_publishing"
    finally:
        await pc.close()
    await until(lambda: forwarder.live_peer_connections == 0)
    assert not forwarder._sessions
