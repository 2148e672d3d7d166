"""Recording of published sessions, without transcoding.

A `Recorder` is a sink of a publisher's tracks: it keeps the encoded frames of
the current segment in memory, cuts a segment on the first video keyframe
after `segment_seconds` (asking the publisher for one when the time is up),
muxes it to WebM (VP8/Opus) or Matroska (H.264) in an executor, and awaits
`sink(segment_bytes, index)` for each segment in order. Closing flushes the
partial segment, so a publisher leaving loses nothing already received.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import av

from actors.media.fanout import EncodedFrame, PublishedTrack

logger = logging.getLogger(__name__)

WEBM_CODECS = frozenset({"vp8", "opus"})


@dataclass(frozen=True, slots=True)
class SegmentIndex:
    session_id: str
    source: str  # camera, screen, side or talkback
    segment: int  # 0, 1, 2... per session
    start_time: float  # wall clock of the first frame, seconds since the epoch
    end_time: float  # wall clock of the last frame
    frame_count: int  # video frames (audio frames for an audio-only session)
    audio_frames: int
    byte_size: int
    codec: str  # "vp8+opus", "h264", ...
    container: str  # "webm" or "matroska"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SegmentSink = Callable[[bytes, SegmentIndex], Awaitable[None]]


@dataclass(slots=True)
class _Segment:
    number: int
    frames: list[tuple[PublishedTrack, EncodedFrame]] = field(default_factory=list)

    @property
    def started(self) -> float:
        return self.frames[0][1].arrival

    def count(self, kind: str) -> int:
        return sum(1 for track, _ in self.frames if track.kind == kind)


def _vp8_size(data: bytes) -> tuple[int, int]:
    # RFC 6386 section 9.1: a key frame carries its size after the start code.
    if len(data) >= 10 and data[3:6] == b"\x9d\x01\x2a":
        return (data[6] | data[7] << 8) & 0x3FFF, (data[8] | data[9] << 8) & 0x3FFF
    return 0, 0


def _h264_size(frames: list[bytes]) -> tuple[int, int]:
    parser = av.CodecContext.create("h264", "r")
    for data in [*frames[:8], b"\x00\x00\x00\x01\x09\xf0"]:  # an AUD ends the last frame
        parser.parse(data)
        if parser.width:
            break
    return int(parser.width), int(parser.height)


def mux_segment(frames: list[tuple[PublishedTrack, EncodedFrame]]) -> tuple[bytes, str]:
    """Mux encoded frames (in arrival order) into one file; CPU-bound, run it in an executor."""
    tracks = list(dict.fromkeys(track for track, _ in frames))
    names = {track.codec_name.lower() for track in tracks}
    container = "webm" if names <= WEBM_CODECS else "matroska"
    start = frames[0][1].arrival
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as output:
        streams, origin = {}, {}
        for track in tracks:
            own = [f for t, f in frames if t is track]
            if track.kind == "video":
                name = track.codec_name.lower()
                width, height = (
                    _vp8_size(own[0].data) if name == "vp8" else _h264_size([f.data for f in own])
                )
                streams[track] = output.add_mux_stream(name, width=width, height=height)
            else:
                streams[track] = output.add_mux_stream("opus", rate=track.clock_rate)
            # Tracks have separate clocks: line their first frames up by arrival time.
            lead = round((own[0].arrival - start) * track.clock_rate)
            origin[track] = own[0].timestamp - lead
        for track, frame in frames:
            packet = av.Packet(frame.data)
            packet.stream = streams[track]
            packet.pts = packet.dts = frame.timestamp - origin[track]
            packet.time_base = track.time_base
            packet.is_keyframe = frame.keyframe
            output.mux(packet)
    return buffer.getvalue(), container


class Recorder:
    """Records one publisher session as a sequence of segments."""

    def __init__(
        self, session_id: str, source: str, sink: SegmentSink, *, segment_seconds: float
    ) -> None:
        self.session_id = session_id
        self.source = source
        self.segments = 0
        self.bytes = 0
        self.failures = 0
        self._sink = sink
        self._seconds = segment_seconds
        self._tracks: list[PublishedTrack] = []
        self._current: _Segment | None = None
        self._next_number = 0
        self._pending: asyncio.Queue[_Segment | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    def watch(self, track: PublishedTrack) -> None:
        self._tracks.append(track)
        track.add_sink(self)

    def on_frame(self, track: PublishedTrack, frame: EncodedFrame) -> None:
        if self._closed:
            return
        has_video = any(t.kind == "video" for t in self._tracks)
        segment = self._current
        if segment is None:
            if has_video and not (track.kind == "video" and frame.keyframe):
                if track.kind == "video":
                    track.request_keyframe()
                return  # a segment starts on a keyframe
            segment = self._start()
        elif frame.arrival - segment.started >= self._seconds:
            if not has_video or (track.kind == "video" and frame.keyframe):
                self._cut()
                segment = self._start()
            elif track.kind == "video":
                track.request_keyframe()
        segment.frames.append((track, frame))

    def on_end(self, track: PublishedTrack) -> None:
        if all(t.ended for t in self._tracks):
            self._cut()

    async def close(self) -> None:
        """Flush the partial segment and wait until the sink has every segment."""
        if self._closed:
            return
        self._closed = True
        self._cut()
        if self._writer is not None:
            self._pending.put_nowait(None)
            await self._writer

    def _start(self) -> _Segment:
        self._current = _Segment(self._next_number)
        self._next_number += 1
        return self._current

    def _cut(self) -> None:
        segment, self._current = self._current, None
        if segment is None or not segment.frames:
            return
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write())
        self._pending.put_nowait(segment)

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        while (segment := await self._pending.get()) is not None:
            try:
                data, container = await loop.run_in_executor(None, mux_segment, segment.frames)
                await self._sink(data, self._index(segment, data, container))
            except Exception:
                self.failures += 1
                logger.exception("segment %d of %s was not stored", segment.number, self.session_id)
                continue
            self.segments += 1
            self.bytes += len(data)

    def _index(self, segment: _Segment, data: bytes, container: str) -> SegmentIndex:
        kinds = {track.kind: track.codec_name.lower() for track, _ in segment.frames}
        video = segment.count("video")
        audio = segment.count("audio")
        return SegmentIndex(
            session_id=self.session_id,
            source=self.source,
            segment=segment.number,
            start_time=segment.started,
            end_time=segment.frames[-1][1].arrival,
            frame_count=video if "video" in kinds else audio,
            audio_frames=audio,
            byte_size=len(data),
            codec="+".join(kinds[k] for k in ("video", "audio") if k in kinds),
            container=container,
        )
