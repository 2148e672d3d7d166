"""Live rooms for proctors and organisers: state, event stream, messages, incidents, and who
the candidates are (names, numbers, enrolment photos) for the staff of their room only.

A message's text, an incident's note (and a candidate's help message, `api.routes.help`)
are sealed with the exam's data key before they go to the room's shard, and opened for
whoever reads them here (`core.room_text`)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response, StreamingResponse

from api.deps import RuntimeDep
from api.events import STREAM_ID, room_stream
from api.media_http import end_candidate_sessions
from api.models import EventOut, IncidentIn, MessageIn, ReviewIn
from api.security import CandidateScopeDep, RoomScopeDep, check_candidate_in_room
from core import room_text
from core.rooms import open_help, open_incidents, presence_counts
from infra.errors import NotFound

router = APIRouter(prefix="/v1/exams/{exam_id}/rooms/{room_id}", tags=["rooms"])
EventId = Annotated[str, Query(pattern=STREAM_ID)]
MAX_STREAM_SECONDS = 900.0
# Identities are opened this many at a time: a large room is not a burst of Redis calls.
ROSTER_BATCH = 50
_PHOTO_TYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


@router.get("")
async def room_state(room: RoomScopeDep, runtime: RuntimeDep) -> dict[str, Any]:
    sealed: dict[str, Any] = await runtime.rooms.room_view(room.key)
    view = await room_text.opened_room_view(runtime.exams.keys, room.exam_id, sealed)
    view["roster"] = await runtime.exams.room_candidates(room.exam_id, room.room_id)
    # When each candidate who has not joined (nor been readmitted) becomes too late to
    # join by themselves (Unix seconds), and the gateway's clock: the console offers to
    # readmit them after it, as it does the candidates a proctor ended.
    exam = await runtime.exams.get(room.exam_id)
    view["late_after"] = await runtime.exams.late_after(exam, view["roster"])
    view["now"] = time.time()
    roster = set(view["roster"])  # of this room only: other rooms' are not the caller's
    view["ended"] = [cid for cid in await runtime.sessions.ended(room.exam_id) if cid in roster]
    return view


@router.get("/events")
async def room_event_stream(
    room: RoomScopeDep,
    request: Request,
    runtime: RuntimeDep,
    last_event_id: Annotated[str | None, Header(pattern=STREAM_ID)] = None,
    after: EventId | None = None,
) -> StreamingResponse:
    """SSE of the room's journal; resume with `Last-Event-ID` (or `?after=`)."""
    cursor = after or last_event_id or "0-0"
    stream = await room_stream(runtime, request, room, cursor, MAX_STREAM_SECONDS)
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.post("/messages", status_code=201)
async def send_message(room: RoomScopeDep, body: MessageIn, runtime: RuntimeDep) -> EventOut:
    if body.to is not None:
        await check_candidate_in_room(runtime, room.exam_id, room.room_id, body.to)
    event = {"type": "message", "proctor": room.principal.name, "to": body.to, "text": body.text}
    event = await room_text.sealed(runtime.exams.keys, room.exam_id, event)
    return EventOut(event_id=await runtime.rooms.append(room.key, event))


@router.post("/incidents", status_code=201)
async def raise_incident(room: RoomScopeDep, body: IncidentIn, runtime: RuntimeDep) -> EventOut:
    await check_candidate_in_room(runtime, room.exam_id, room.room_id, body.candidate)
    event = {
        "type": "incident",
        "cid": body.candidate,
        "incident": body.type,
        "severity": body.severity,
        "evidence": body.evidence,
        "note": body.note,
        "by": room.principal.name,
    }
    event = await room_text.sealed(runtime.exams.keys, room.exam_id, event)
    return EventOut(event_id=await runtime.rooms.append(room.key, event))


@router.post("/incidents/{incident_id}/review", status_code=201)
async def review_incident(
    room: RoomScopeDep,
    incident_id: str,
    body: ReviewIn,
    runtime: RuntimeDep,
) -> EventOut:
    view = await runtime.rooms.room_view(room.key)
    if incident_id not in view["incidents"]:
        raise NotFound("no such incident", reason="incident_not_found")
    event = {
        "type": "incident_reviewed",
        "incident": incident_id,
        "decision": body.decision,
        "proctor": room.principal.name,
    }
    return EventOut(event_id=await runtime.rooms.append(room.key, event))


@router.post("/presence", status_code=201)
async def proctor_presence(
    room: RoomScopeDep, runtime: RuntimeDep, leaving: bool = False
) -> EventOut:
    event = {
        "type": "proctor_left" if leaving else "proctor_joined",
        "proctor": room.principal.name,
    }
    return EventOut(event_id=await runtime.rooms.append(room.key, event))


@router.get("/candidates/{candidate_id}")
async def candidate_detail(scope: CandidateScopeDep, runtime: RuntimeDep) -> dict[str, Any]:
    room, cid = scope.room, scope.candidate_id
    identity = await runtime.exams.identity(room.exam_id, cid)
    view = await runtime.rooms.candidate_view(room.key, cid)
    return {"candidate": cid, **identity, "presence": view["presence"]}


@router.post("/candidates/{candidate_id}/end", status_code=201)
async def end_candidate(scope: CandidateScopeDep, runtime: RuntimeDep) -> EventOut:
    """End the candidate's exam: their session ends now, and it sticks (logins answer 403
    `ended_by_proctor`) until a proctor of the room or the organiser readmits them."""
    room, cid = scope.room, scope.candidate_id
    event = {"type": "ended", "cid": cid, "by": room.principal.name}
    await runtime.sessions.end_candidate(room.exam_id, cid, room.principal.name)
    # After the login: a session that ends first could otherwise be published again.
    await end_candidate_sessions(runtime, room.exam_id, cid)
    return EventOut(event_id=await runtime.rooms.append(room.key, event))


@router.post("/candidates/{candidate_id}/readmit", status_code=201)
async def readmit_candidate(scope: CandidateScopeDep, runtime: RuntimeDep) -> EventOut:
    """Let an ended candidate log in and join again, or one past the late cut-off join
    late (409 `not_ended` if nobody ended them and they are not too late)."""
    room, cid = scope.room, scope.candidate_id
    exam = await runtime.exams.get(room.exam_id)
    candidate = await runtime.exams.candidate(room.exam_id, cid)
    if candidate is None:
        raise NotFound("no such candidate", reason="candidate_not_found")
    late = not (candidate.joined or candidate.admitted) and (
        datetime.now(UTC) > runtime.exams.schedule(exam, candidate).late_after
    )
    await runtime.sessions.readmit(room.exam_id, cid, late=late)
    await runtime.exams.admit(room.exam_id, cid)
    event = {"type": "readmitted", "cid": cid, "by": room.principal.name, "late": late}
    return EventOut(event_id=await runtime.rooms.append(room.key, event))


@router.get("/summary")
async def room_summary(room: RoomScopeDep, runtime: RuntimeDep) -> dict[str, Any]:
    """Counts for an overview of many rooms (a chief proctor's): no names, no messages."""
    view = await runtime.rooms.room_view(room.key)
    roster = await runtime.exams.room_candidates(room.exam_id, room.room_id)
    return {
        "room": room.room_id,
        "candidates": len(roster),
        **presence_counts(view, roster),
        "help": open_help(view),
        "incidents": open_incidents(view),
    }


@router.get("/roster")
async def room_roster(room: RoomScopeDep, runtime: RuntimeDep) -> dict[str, Any]:
    """Who each candidate of the room is, opened with the exam's key, for the proctor to
    compare with the face on the camera. Sent to the room's staff only, never logged."""
    cids = await runtime.exams.room_candidates(room.exam_id, room.room_id)

    async def one(cid: str) -> dict[str, Any]:
        identity = await runtime.exams.identity(room.exam_id, cid)
        record = await runtime.face.record(room.exam_id, cid)
        return {"cid": cid, **identity, "has_photo": bool(record and record.photo)}

    people: list[dict[str, Any]] = []
    for start in range(0, len(cids), ROSTER_BATCH):
        people += await asyncio.gather(*(one(c) for c in cids[start : start + ROSTER_BATCH]))
    return {"candidates": people}


@router.get("/candidates/{candidate_id}/photo")
async def enrolment_photo(scope: CandidateScopeDep, runtime: RuntimeDep) -> Response:
    """The enrolment photo, where the exam keeps one (404 `no_enrolment` otherwise)."""
    exam_id = scope.room.exam_id
    record = await runtime.face.record(exam_id, scope.candidate_id)
    if record is None or not record.photo:
        raise NotFound("no enrolment photo for this candidate", reason="no_enrolment")
    body = await runtime.regional.get(exam_id, record.photo)
    media_type = _PHOTO_TYPES.get(record.photo.rsplit(".", 1)[-1].lower(), "image/jpeg")
    headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    return Response(body, media_type=media_type, headers=headers)
