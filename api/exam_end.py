"""The end of a candidate's exam, wherever a candidate shows they are still there.

At the candidate's end (the exam's, extended, plus their accommodation) the first sign
of life after it — an HTTP heartbeat, a beat on the presence socket — ends their
session and their media, journals why, and is refused 403 `exam_over`; later requests
find the session gone (401). Checked where the candidate beats rather than by a sweeper:
a client beats every 5 s, so the media stops within a beat (or one presence recheck)
of the end.
"""

from __future__ import annotations

from datetime import UTC, datetime

from api.deps import RuntimeDep
from api.media_http import end_candidate_sessions
from api.security import Principal
from infra.errors import Forbidden


async def end_if_over(runtime: RuntimeDep, principal: Principal, room: str) -> None:
    """Raise 403 `exam_over`, having ended the session and the media, once it is over."""
    exam_id, cid = principal.claims.exam, principal.name
    assert exam_id is not None
    _, ends_at = await runtime.exams.ends_for(exam_id, cid)
    if datetime.now(UTC) < ends_at:
        return
    await runtime.sessions.end_active("candidate", exam_id, cid)
    await end_candidate_sessions(runtime, exam_id, cid)
    await runtime.rooms.append(room, {"type": "left", "cid": cid, "why": "exam_over"})
    raise Forbidden("the exam is over", reason="exam_over", ends_at=ends_at.isoformat())
