"""Live rooms for proctors and organisers: state, event stream, messages, incidents."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from api.deps import RuntimeDep
from api.events import STREAM_ID, room_events
from api.models import EventOut, Identifier, IncidentIn, MessageIn, ReviewIn
from api.rooms import room_key
from api.security import StaffDep, check_candidate_in_room, check_room
from infra.errors import InvalidInput, NotFound

router = APIRouter(prefix="/v1/exams/{exam_id}/rooms/{room_id}", tags=["rooms"])
StreamId = Annotated[str, Query(pattern=STREAM_ID)]
MAX_STREAM_SECONDS = 900.0


@router.get("")
async def room_state(
    exam_id: Identifier, room_id: Identifier, staff: StaffDep, runtime: RuntimeDep
) -> dict[str, Any]:
    await check_room(runtime, staff, exam_id, room_id)
    view: dict[str, Any] = await runtime.rooms.call(room_key(exam_id, room_id), "room_view")
    view["roster"] = await runtime.exams.room_candidates(exam_id, room_id)
    return view


@router.get("/events")
async def room_event_stream(
    exam_id: Identifier,
    room_id: Identifier,
    request: Request,
    staff: StaffDep,
    runtime: RuntimeDep,
    last_event_id: str | None = Header(default=None),
    after: StreamId | None = None,
) -> StreamingResponse:
    await check_room(runtime, staff, exam_id, room_id)
    cursor = after or last_event_id or "0-0"
    if not re.fullmatch(STREAM_ID, cursor):
        raise InvalidInput("Last-Event-ID is not an event id", reason="bad_event_id")
    stream = room_events(
        runtime.redis,
        room_key(exam_id, room_id),
        cursor,
        request.is_disconnected,
        MAX_STREAM_SECONDS,
    )
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.post("/messages", status_code=201)
async def send_message(
    exam_id: Identifier, room_id: Identifier, body: MessageIn, staff: StaffDep, runtime: RuntimeDep
) -> EventOut:
    await check_room(runtime, staff, exam_id, room_id)
    if body.to is not None:
        await check_candidate_in_room(runtime, exam_id, room_id, body.to)
    event = {"type": "message", "proctor": staff.name, "to": body.to, "text": body.text}
    return EventOut(event_id=await runtime.rooms.call(room_key(exam_id, room_id), "append", event))


@router.post("/incidents", status_code=201)
async def raise_incident(
    exam_id: Identifier, room_id: Identifier, body: IncidentIn, staff: StaffDep, runtime: RuntimeDep
) -> EventOut:
    await check_room(runtime, staff, exam_id, room_id)
    await check_candidate_in_room(runtime, exam_id, room_id, body.candidate)
    event = {
        "type": "incident",
        "cid": body.candidate,
        "incident": body.type,
        "severity": body.severity,
        "evidence": body.evidence,
        "note": body.note,
        "by": staff.name,
    }
    return EventOut(event_id=await runtime.rooms.call(room_key(exam_id, room_id), "append", event))


@router.post("/incidents/{incident_id}/review", status_code=201)
async def review_incident(
    exam_id: Identifier,
    room_id: Identifier,
    incident_id: str,
    body: ReviewIn,
    staff: StaffDep,
    runtime: RuntimeDep,
) -> EventOut:
    await check_room(runtime, staff, exam_id, room_id)
    key = room_key(exam_id, room_id)
    view = await runtime.rooms.call(key, "room_view")
    if incident_id not in view["incidents"]:
        raise NotFound("no such incident", reason="incident_not_found")
    event = {
        "type": "incident_reviewed",
        "incident": incident_id,
        "decision": body.decision,
        "proctor": staff.name,
    }
    return EventOut(event_id=await runtime.rooms.call(key, "append", event))


@router.post("/presence", status_code=201)
async def proctor_presence(
    exam_id: Identifier,
    room_id: Identifier,
    staff: StaffDep,
    runtime: RuntimeDep,
    leaving: bool = False,
) -> EventOut:
    await check_room(runtime, staff, exam_id, room_id)
    event = {"type": "proctor_left" if leaving else "proctor_joined", "proctor": staff.name}
    return EventOut(event_id=await runtime.rooms.call(room_key(exam_id, room_id), "append", event))


@router.get("/candidates/{candidate_id}")
async def candidate_detail(
    exam_id: Identifier,
    room_id: Identifier,
    candidate_id: Identifier,
    staff: StaffDep,
    runtime: RuntimeDep,
) -> dict[str, Any]:
    await check_room(runtime, staff, exam_id, room_id)
    await check_candidate_in_room(runtime, exam_id, room_id, candidate_id)
    identity = await runtime.exams.identity(exam_id, candidate_id)
    view = await runtime.rooms.call(room_key(exam_id, room_id), "candidate_view", candidate_id)
    return {"candidate": candidate_id, **identity, "presence": view["presence"]}


@router.post("/candidates/{candidate_id}/end", status_code=201)
async def end_candidate(
    exam_id: Identifier,
    room_id: Identifier,
    candidate_id: Identifier,
    staff: StaffDep,
    runtime: RuntimeDep,
) -> EventOut:
    await check_room(runtime, staff, exam_id, room_id)
    await check_candidate_in_room(runtime, exam_id, room_id, candidate_id)
    event = {"type": "ended", "cid": candidate_id, "by": staff.name}
    await runtime.sessions.end_active("candidate", exam_id, candidate_id)
    return EventOut(event_id=await runtime.rooms.call(room_key(exam_id, room_id), "append", event))
