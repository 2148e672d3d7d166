"""What the organiser's console reads and does beyond one exam's record: the live overview
of every room, the candidates of a room by name, and taking a candidate off the exam.

The overview is built from the room actors' own state (as a proctor's room view is), so
it shows what the journal says rather than a second count that could drift; it reads at
most `MAX_OVERVIEW_ROOMS` rooms per request, a few at a time, and pages on with `after`.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from actors.privacy.exports import EXAM_WIDE
from api.deps import RuntimeDep
from api.media_http import end_candidate_sessions
from api.security import ExamScope, OrganiserExamDep, PrincipalDep, check_exam
from core import keys
from core.exam import Identifier
from core.rooms import open_help, open_incidents, presence_counts
from infra.errors import Conflict, Forbidden, NotFound, Unavailable
from infra.redis import text

router = APIRouter(prefix="/v1/exams/{exam_id}", tags=["organiser"])
MAX_OVERVIEW_ROOMS = 100
# Room actors asked at once: enough to hide the round trips, few enough that one console
# does not queue ahead of the rooms' own heartbeats.
READ_AT_ONCE = 8
COUNTED = (
    "roster",
    "present",
    "disconnected",
    "gone",
    "absent",
    "incidents_open",
    "help",
    "face_reviews_pending",
)


async def overview_scope(
    exam_id: Identifier, principal: PrincipalDep, runtime: RuntimeDep
) -> ExamScope:
    """The exam's organisers and chief proctors: who answer for every room of it. Proctors
    (one room each) and examiners (no live room) are refused 403."""
    if principal.role not in ("organiser", "chief-proctor"):
        raise Forbidden(
            "organisers and chief proctors only", reason="organisers_or_chief_proctors_only"
        )
    await check_exam(runtime, principal, exam_id)
    return ExamScope(principal, exam_id)


OverviewScopeDep = Annotated[ExamScope, Depends(overview_scope)]


@router.get("/overview")
async def overview(
    scope: OverviewScopeDep,
    runtime: RuntimeDep,
    after: Annotated[Identifier | None, Query()] = None,
) -> dict[str, Any]:
    """Per room: its roster's count present, disconnected, gone (left or ended) and absent,
    open incidents, open help requests, face reviews waiting, its proctors; `next` names
    the room to page on `after` when the exam has more rooms than one answer reads."""
    exam = await runtime.exams.get(scope.exam_id)
    names = sorted(
        room for room in await runtime.exams.rooms(exam.id) if after is None or room > after
    )
    page = names[:MAX_OVERVIEW_ROOMS]
    rooms: list[dict[str, Any]] = []
    for start in range(0, len(page), READ_AT_ONCE):
        chunk = page[start : start + READ_AT_ONCE]
        rooms += await asyncio.gather(*(_room(runtime, exam.id, room) for room in chunk))
    totals = {field: sum(room.get(field, 0) for room in rooms) for field in COUNTED}
    return {
        "exam": exam.id,
        "cancelled": exam.cancelled,
        "starts_at": exam.starts_at.isoformat(),
        "ends_at": exam.ends_at.isoformat(),
        "rooms": rooms,
        "totals": totals,
        "next": page[-1] if len(names) > len(page) else None,
        "now": time.time(),
    }


async def _room(runtime: RuntimeDep, exam_id: str, room: str) -> dict[str, Any]:
    roster = await runtime.exams.room_candidates(exam_id, room)
    found: dict[str, Any] = {
        "room": room,
        "roster": len(roster),
        "proctors": await runtime.exams.room_proctors(exam_id, room),
        "face_reviews_pending": await _pending_reviews(runtime, exam_id, room),
    }
    try:
        view = await runtime.rooms.room_view(keys.room_key(exam_id, room))
    except Unavailable:
        # One room's shard moving must not blank the whole overview: the console says so.
        return {**found, "unavailable": True}
    counts = presence_counts(view, roster)
    return {
        **found,
        "present": counts["joined"],
        "disconnected": counts["disconnected"],
        "gone": counts["left"] + counts["ended"],
        "absent": counts["absent"],
        "incidents_open": open_incidents(view),
        "help": open_help(view),
        "proctors_present": view["proctors"],
    }


async def _pending_reviews(runtime: RuntimeDep, exam_id: str, room: str) -> int:
    ids = [text(m) for m in await runtime.redis.smembers(keys.face_room_reviews_key(exam_id, room))]
    raws = await runtime.redis.hmget(keys.face_reviews_key(exam_id), ids) if ids else []
    return sum(1 for raw in raws if raw and json.loads(raw).get("status") == "pending")


@router.get("/candidates")
async def room_candidates(
    scope: OrganiserExamDep, runtime: RuntimeDep, room: Annotated[Identifier, Query()]
) -> dict[str, Any]:
    """The candidates of one room by name and number (opened from their sealed record, for
    the organiser only), with their accommodation; bounded by the room's capacity."""
    if room not in await runtime.exams.rooms(scope.exam_id):
        raise NotFound("no such room", reason="room_not_found")
    found: list[dict[str, Any]] = []
    for cid in await runtime.exams.room_candidates(scope.exam_id, room):
        candidate = await runtime.exams.candidate(scope.exam_id, cid)
        if candidate is None:  # removed meanwhile
            continue
        identity = await runtime.exams.identity(scope.exam_id, cid)
        found.append({"candidate": cid, **identity, "extra_minutes": candidate.extra_minutes})
    found.sort(key=lambda c: str(c["candidate_no"]))
    return {"room": room, "candidates": found}


@router.delete("/candidates/{candidate_id}", status_code=204)
async def remove_candidate(
    scope: OrganiserExamDep, candidate_id: Identifier, runtime: RuntimeDep
) -> None:
    """Take a candidate off the exam: their session and media end, they leave their room's
    roster, and their identity record is deleted (they can no longer log in). What they
    recorded stays in the exam's region until the retention rules delete it: their exit,
    journaled here, is the `candidate_exit` trigger. 409 `legal_hold` while a hold covers
    them (the identity is part of what is held), and nothing changes.

    The identity goes now rather than at its `identity` rule: retention finds identities
    through the rooms' rosters, so one kept off the roster would never be swept; deleting
    it early is within every rule, deleting it late would not be."""
    exam_id, cid = scope.exam_id, candidate_id
    candidate = await runtime.exams.candidate(exam_id, cid)
    if candidate is None:
        raise NotFound("no such candidate", reason="candidate_not_found")
    exam = await runtime.exams.get(exam_id)
    holds = await runtime.privacy.holds.all(exam_id)
    if any(hold.subject in (EXAM_WIDE, cid) for hold in holds):
        raise Conflict("a legal hold covers this candidate", reason="legal_hold")
    # The identity goes first: a login that races this one finds no record and fails as a
    # wrong pair; one that won already has its session ended just after.
    removed = await runtime.exams.remove_candidate(exam_id, cid)
    await runtime.sessions.end_active("candidate", exam_id, cid)
    await end_candidate_sessions(runtime, exam_id, cid)
    room = keys.room_key(exam_id, removed.room)
    by = scope.principal.name
    await runtime.rooms.append(room, {"type": "left", "cid": cid, "why": "removed"})
    await runtime.rooms.append(room, {"type": "candidate_removed", "cid": cid, "by": by})
    await runtime.privacy.audit(exam.region).append(
        "candidate_removed", {"candidate": cid, "by": by}, exam=exam_id
    )
