"""Recorded segments into the exam's regional bucket, and their index in Redis.

`SegmentStore` is the `SegmentSink` of a MediaShard's forwarder: each segment
goes to `RegionalStore.put(exam, "recordings", cid, name)` (the store picks
the exam's region), with bounded retries, then into `RecordingIndex`, which
the gateway reads to list and play back a candidate's recordings by time.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from actors.media.recording import SegmentIndex
from actors.media.tag import SessionTag
from core import keys
from infra.errors import DependencyDown
from infra.regional import RegionalStore, StoredObject

logger = logging.getLogger(__name__)

EXTENSIONS = {"webm": "webm", "matroska": "mkv"}
MEDIA_TYPES = {"webm": "video/webm", "matroska": "video/x-matroska"}
RETRYABLE = (DependencyDown, ClientError, BotoCoreError, RedisError, OSError)


def segment_name(index: SegmentIndex) -> str:
    return f"{index.session_id}-{index.segment:05d}.{EXTENSIONS[index.container]}"


@dataclass(frozen=True, slots=True)
class Segment:
    """One entry of the index: where a segment is and what it holds."""

    name: str
    key: str
    version_id: str | None
    region: str
    room: str
    session: str
    source: str
    segment: int
    start: float
    end: float
    frames: int
    audio_frames: int
    byte_size: int
    codec: str
    container: str

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.container]

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Segment:
        values: dict[str, Any] = json.loads(raw)
        return cls(**values)


class RecordingIndex:
    """Per exam and candidate: a sorted set of segment names by start time, and their entries."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def add(self, exam_id: str, cid: str, segment: Segment) -> None:
        by_time, entries = keys.recording_keys(exam_id, cid)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(entries, segment.name, segment.to_json())
            pipe.zadd(by_time, {segment.name: segment.start})
            await pipe.execute()

    async def between(
        self, exam_id: str, cid: str, start: float, end: float, *, lookback: float, limit: int
    ) -> list[Segment]:
        """Segments overlapping [start, end], oldest first; none starts `lookback` before start."""
        by_time, entries = keys.recording_keys(exam_id, cid)
        names = await self.redis.zrangebyscore(by_time, start - lookback, end, start=0, num=limit)
        if not names:
            return []
        found = await self.redis.hmget(entries, [_name(n) for n in names])
        segments = [Segment.from_json(raw) for raw in found if raw is not None]
        return [s for s in segments if s.end >= start]

    async def get(self, exam_id: str, cid: str, name: str) -> Segment | None:
        raw = await self.redis.hget(keys.recording_keys(exam_id, cid)[1], name)
        return Segment.from_json(raw) if raw is not None else None


class SegmentStore:
    """Stores each recorded segment of the sessions named in `tags`."""

    def __init__(
        self,
        regional: RegionalStore,
        index: RecordingIndex,
        tags: Mapping[str, SessionTag],
        *,
        attempts: int,
    ) -> None:
        self.regional = regional
        self.index = index
        self.stored = 0
        self.retries = 0
        self._tags = tags
        self._attempts = attempts

    async def __call__(self, data: bytes, index: SegmentIndex) -> None:
        tag = self._tags.get(index.session_id)
        if tag is None or tag.cid is None:
            raise LookupError(f"segment of an unknown session {index.session_id}")
        for attempt in range(self._attempts):
            try:
                await self._store(tag, tag.cid, data, index)
            except RETRYABLE:
                if attempt + 1 == self._attempts:
                    raise
                self.retries += 1
                logger.warning("storing segment %d failed; retrying", index.segment)
                await asyncio.sleep(min(0.25 * 2**attempt, 4.0))
            else:
                self.stored += 1
                return

    async def _store(self, tag: SessionTag, cid: str, data: bytes, index: SegmentIndex) -> None:
        name = segment_name(index)
        stored = await self.regional.put(
            tag.exam,
            "recordings",
            cid,
            name,
            data,
            content_type=MEDIA_TYPES[index.container],
            metadata={"source": index.source, "segment": str(index.segment)},
        )
        await self.index.add(tag.exam, cid, _entry(name, stored, tag, index))


def _entry(name: str, stored: StoredObject, tag: SessionTag, index: SegmentIndex) -> Segment:
    return Segment(
        name=name,
        key=stored.key,
        version_id=stored.version_id,
        region=stored.region,
        room=tag.room,
        session=index.session_id,
        source=index.source,
        segment=index.segment,
        start=index.start_time,
        end=index.end_time,
        frames=index.frame_count,
        audio_frames=index.audio_frames,
        byte_size=index.byte_size,
        codec=index.codec,
        container=index.container,
    )


def _name(member: Any) -> str:
    return member.decode() if isinstance(member, bytes) else str(member)
