"""Sampling decodes one keyframe per interval, not the stream."""

from __future__ import annotations

from actors.media.frame_sampler import Sample
from tests.media.conftest import Stage
from tests.support.wait import until
from tests.support.webrtc import HEIGHT, WIDTH, read_index


async def test_sampler_decodes_one_requested_keyframe_per_interval(stage: Stage) -> None:
    samples: list[Sample] = []

    async def on_sample(sample: Sample) -> None:
        samples.append(sample)

    forwarder = stage.forwarder({"on_sample": on_sample}, sample_interval_s=1.0)
    publisher = await stage.publish(forwarder)
    video = publisher.session.tracks["video"]
    await until(lambda: len(samples) >= 3)
    stats = await forwarder.stats()

    assert publisher.video is not None
    sent = set(publisher.video.sent_at)
    for sample in samples:
        assert sample.image.shape == (HEIGHT, WIDTH, 3)
        assert sample.session_id == publisher.session.id
        assert sample.source == "camera"
        assert read_index(sample.image) in sent  # a real picture of this stream
    # One decode per sample; the other frames (aiortc's encoder only makes
    # keyframes when asked) were never decoded.
    assert stats["decodes"] == stats["samples"] >= 3
    assert video.frames_in >= 20
    assert stats["decodes"] < video.frames_in / 5
    assert video.keyframe_requests_sent >= stats["samples"] - 1
    later = [read_index(s.image) for s in samples]
    assert later == sorted(later)
