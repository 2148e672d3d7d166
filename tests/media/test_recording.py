"""Recording segments without transcoding, and never losing the last one."""

from __future__ import annotations

import asyncio
import io

import av

from actors.media.recording import SegmentIndex
from actors.media.sfu import Forwarder
from tests.media.conftest import Stage
from tests.support.wait import until
from tests.support.webrtc import FPS, read_index


class Segments:
    """A sink standing in for the regional object store."""

    def __init__(self) -> None:
        self.stored: list[tuple[bytes, SegmentIndex]] = []

    async def __call__(self, data: bytes, index: SegmentIndex) -> None:
        self.stored.append((data, index))


def open_segment(data: bytes) -> tuple[list[int], list[bool], int, float]:
    """Decoded frame indices, keyframe flags, audio frames, duration in seconds."""
    with av.open(io.BytesIO(data), "r") as container:
        duration = (container.duration or 0) / 1_000_000
        keyframes = [bool(p.is_keyframe) for p in container.demux(video=0) if p.size]
    with av.open(io.BytesIO(data), "r") as container:
        indices = [read_index(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    with av.open(io.BytesIO(data), "r") as container:
        audio = sum(1 for p in container.demux(audio=0) if p.size)
    return indices, keyframes, audio, duration


def recording_forwarder(stage: Stage, sink: Segments) -> Forwarder:
    return stage.forwarder({"segment_sink": sink}, recording_enabled=True, segment_seconds=1.0)


async def test_segments_hold_every_frame_and_the_last_is_flushed(stage: Stage) -> None:
    sink = Segments()
    forwarder = recording_forwarder(stage, sink)
    publisher = await stage.publish(forwarder)
    session = publisher.session
    await until(lambda: len(sink.stored) >= 2)
    await asyncio.sleep(0.5)  # into the next segment
    await publisher.close()
    await until(lambda: session.id not in forwarder._sessions)  # closing awaited the flush

    assert publisher.video is not None
    recorded: list[int] = []
    for number, (data, index) in enumerate(sink.stored):
        indices, keyframes, audio, duration = open_segment(data)
        assert index.segment == number
        assert index.session_id == session.id
        assert (index.source, index.codec, index.container) == ("camera", "vp8+opus", "webm")
        assert index.byte_size == len(data)
        assert index.frame_count == len(indices)
        assert index.audio_frames == audio > 0
        assert keyframes[0], "a segment must start on a keyframe"
        assert abs(duration - len(indices) / FPS) < 0.25, (duration, len(indices))
        assert index.start_time <= index.end_time
        recorded += indices
    # Across segments: every frame, once, in order, up to the publisher leaving.
    assert recorded == list(range(recorded[0], recorded[-1] + 1))
    assert recorded[0] <= 1
    assert recorded[-1] >= max(publisher.video.sent_at) - 3
    last_index = sink.stored[-1][1]
    assert last_index.end_time - last_index.start_time < 1.0  # the partial segment


async def test_closing_the_forwarder_flushes_the_partial_segment(stage: Stage) -> None:
    sink = Segments()
    forwarder = recording_forwarder(stage, sink)
    publisher = await stage.publish(forwarder)
    # Frames are counted as their last packet comes; aiortc's jitter buffer hands a
    # frame to the recorder only when the next one starts, so one more must come.
    await until(lambda: publisher.session.tracks["video"].frames_in >= 9)
    assert sink.stored == []
    await forwarder.close()
    assert len(sink.stored) == 1
    indices, _, _, _ = open_segment(sink.stored[0][0])
    assert len(indices) >= 8
    assert (await forwarder.stats())["segments_recorded"] == 1


async def test_h264_is_forwarded_and_recorded_as_matroska(stage: Stage) -> None:
    sink = Segments()
    forwarder = recording_forwarder(stage, sink)
    publisher = await stage.publish(forwarder, video_codec="video/H264")
    assert publisher.session.tracks["video"].codec_name == "H264"
    viewer = await stage.view(forwarder, [publisher.session.id])
    await until(lambda: len(viewer.indices) >= 20 and len(sink.stored) >= 1)
    indices = [index for index, _ in viewer.indices]
    assert indices == sorted(set(indices))
    assert len(indices) >= 0.9 * (indices[-1] - indices[0] + 1)
    assert (await forwarder.stats())["encodes"] == 0

    await publisher.close()
    await until(lambda: publisher.session.id not in forwarder._sessions)
    recorded: list[int] = []
    for data, index in sink.stored:
        frames, keyframes, audio, _ = open_segment(data)
        assert (index.codec, index.container) == ("h264+opus", "matroska")
        assert keyframes[0]
        assert index.frame_count == len(frames)
        assert audio > 0
        recorded += frames
    assert recorded == list(range(recorded[0], recorded[-1] + 1))
