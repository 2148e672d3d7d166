"""The end of a candidate's exam, wherever a candidate shows they are still there.

At the candidate's end (the exam's, extended, plus their accommodation) the first sign
of life after it — an HTTP heartbeat, a beat on the presence socket — ends their
session and their media, journals why, and is refused 403 `exam_over`; later requests
find the session gone (401). Checked where the candidate beats rather than by a sweeper:
a client beats every 5 s, so the media stops within a beat (or one presence recheck)
of the end. A cancelled exam ends its candidates the same way, at their next beat after
the cancellation, with 403 `exam_cancelled`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from api.deps import RuntimeDep
from api.media_http import end_candidate_sessions
from api.security import Principal
from infra.errors import Forbidden


async def end_if_over(runtime: RuntimeDep, principal: Principal, room: str) -> None:
    """Raise 403 `exam_over` (or `exam_cancelled`), having ended the session and the media,
    once it is over (or cancelled)."""
    exam_id, cid = principal.claims.exam, principal.name
    assert exam_id is not None
    exam, ends_at = await runtime.exams.ends_for(exam_id, cid)
    if exam.cancelled:
        why, error = "exam_cancelled", Forbidden("this exam was cancelled", reason="exam_cancelled")
    elif datetime.now(UTC) >= ends_at:
        why = "exam_over"
        error = Forbidden("the exam is over", reason=why, ends_at=ends_at.isoformat())
    else:
        return
    await runtime.sessions.end_active("candidate", exam_id, cid)
    await end_candidate_sessions(runtime, exam_id, cid)
    await runtime.rooms.append(room, {"type": "left", "cid": cid, "why": why})
    raise error
