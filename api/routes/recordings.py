"""Recordings of a candidate for proctors and organisers: list by time range, play a segment.

Segments are stored by the candidate's media shard as they are recorded
(camera, screen and side, each a sequence of WebM or Matroska files that
each start on a keyframe) in the exam's regional bucket, and indexed by
start time in Redis; a time range lists the segments that overlap it.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from api.deps import RuntimeDep
from api.security import StaffDep, check_candidate_in_room, check_room
from core.exam import Identifier
from infra.errors import InvalidInput, NotFound

router = APIRouter(
    prefix="/v1/exams/{exam_id}/rooms/{room_id}/candidates/{candidate_id}/recordings",
    tags=["recordings"],
)
MAX_SEGMENTS = 1000
SEGMENT_NAME = r"[0-9a-f]{32}-[0-9]{5}\.(webm|mkv)"
Timestamp = Annotated[float | None, Query(ge=0, le=4e9)]


@router.get("")
async def list_recordings(
    exam_id: Identifier,
    room_id: Identifier,
    candidate_id: Identifier,
    staff: StaffDep,
    runtime: RuntimeDep,
    start: Timestamp = None,
    end: Timestamp = None,
) -> dict[str, Any]:
    """Segments overlapping [start, end] (seconds since the epoch; default: everything so far)."""
    await check_room(runtime, staff, exam_id, room_id)
    await check_candidate_in_room(runtime, exam_id, room_id, candidate_id)
    since = start if start is not None else 0.0
    until = end if end is not None else time.time()
    if until < since:
        raise InvalidInput("end is before start", reason="bad_time_range")
    # A segment may run past segment_seconds while it waits for a keyframe.
    lookback = 4 * runtime.settings.media.segment_seconds + 60
    segments = await runtime.media.recordings.between(
        exam_id, candidate_id, since, until, lookback=lookback, limit=MAX_SEGMENTS + 1
    )
    base = f"/v1/exams/{exam_id}/rooms/{room_id}/candidates/{candidate_id}/recordings"
    return {
        "candidate": candidate_id,
        "start": since,
        "end": until,
        "truncated": len(segments) > MAX_SEGMENTS,
        "segments": [
            {
                "name": s.name,
                "url": f"{base}/{s.name}",
                "source": s.source,
                "session": s.session,
                "segment": s.segment,
                "start": s.start,
                "end": s.end,
                "frames": s.frames,
                "audio_frames": s.audio_frames,
                "bytes": s.byte_size,
                "codec": s.codec,
                "media_type": s.media_type,
                "version_id": s.version_id,
            }
            for s in segments[:MAX_SEGMENTS]
        ],
    }


@router.get("/{segment}")
async def play_segment(
    exam_id: Identifier,
    room_id: Identifier,
    candidate_id: Identifier,
    segment: str,
    staff: StaffDep,
    runtime: RuntimeDep,
) -> Response:
    """One segment's bytes, from the exam's regional bucket."""
    await check_room(runtime, staff, exam_id, room_id)
    await check_candidate_in_room(runtime, exam_id, room_id, candidate_id)
    found = None
    if re.fullmatch(SEGMENT_NAME, segment):
        found = await runtime.media.recordings.get(exam_id, candidate_id, segment)
    if found is None:
        raise NotFound("no such recording", reason="recording_not_found")
    data = await runtime.regional.get(exam_id, found.key)
    return Response(data, media_type=found.media_type, headers={"Cache-Control": "no-store"})
