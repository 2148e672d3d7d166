"""Exam administration: organisers create exams, import rosters and assign proctors."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request

from api.deps import RuntimeDep
from api.media_http import close_quietly
from api.models import (
    AccommodationIn,
    EventOut,
    ExamCreate,
    ExamEdit,
    ExtendIn,
    GuardianConsentIn,
    Username,
)
from api.security import ExamScopeDep, OrganiserDep, OrganiserExamDep
from core import keys, roster
from core.exam import Exam, Identifier, RosterReport
from infra.errors import Conflict, NotFound, UnsupportedMediaType
from infra.redis import text
from infra.tokens import EXAM_WIDE_ROLES

router = APIRouter(prefix="/v1/exams", tags=["exams"])


@router.post("", status_code=201)
async def create_exam(body: ExamCreate, organiser: OrganiserDep, runtime: RuntimeDep) -> Exam:
    return await runtime.exams.create(body, organiser.name)


@router.get("")
async def list_exams(organiser: OrganiserDep, runtime: RuntimeDep) -> list[str]:
    return await runtime.exams.staff_exams(organiser.name)


@router.get("/{exam_id}")
async def get_exam(scope: ExamScopeDep, runtime: RuntimeDep) -> Exam:
    return await runtime.exams.get(scope.exam_id)


@router.patch("/{exam_id}")
async def edit_exam(scope: OrganiserExamDep, body: ExamEdit, runtime: RuntimeDep) -> Exam:
    """Change the title or the times; an edit that makes no sense is refused (see
    `ExamRegistry.edit`), and a change of times is journaled in each room."""
    changes = body.model_dump(exclude_none=True)
    exam = await runtime.exams.edit(scope.exam_id, changes)
    if {"starts_at", "ends_at"} & changes.keys():
        event = {
            "type": "exam_changed",
            "starts_at": exam.starts_at.isoformat(),
            "ends_at": exam.ends_at.isoformat(),
            "by": scope.principal.name,
        }
        await _journal_everywhere(runtime, exam.id, event)
    return exam


@router.post("/{exam_id}/cancel")
async def cancel_exam(scope: OrganiserExamDep, runtime: RuntimeDep) -> Exam:
    """Cancel the exam for good: logins, joins and publishing answer 403 `exam_cancelled`,
    live candidates are ended at their next beat (`api.exam_end`), and every room journals
    `exam_cancelled`. 409 `exam_cancelled` (again) or `exam_over`."""
    exam = await runtime.exams.cancel(scope.exam_id, scope.principal.name)
    await _journal_everywhere(runtime, exam.id, {"type": "exam_cancelled", "by": exam.cancelled_by})
    return exam


async def _journal_everywhere(runtime: RuntimeDep, exam_id: str, event: dict[str, Any]) -> None:
    for room in sorted(await runtime.exams.rooms(exam_id)):
        await runtime.rooms.append(keys.room_key(exam_id, room), event)


async def _refuse_cancelled(runtime: RuntimeDep, exam_id: str) -> Exam:
    exam = await runtime.exams.get(exam_id)
    if exam.cancelled:
        raise Conflict("the exam was cancelled", reason="exam_cancelled")
    return exam


@router.post("/{exam_id}/roster")
async def import_roster(
    scope: OrganiserExamDep, request: Request, runtime: RuntimeDep
) -> RosterReport:
    """All or nothing: a roster with any bad row imports nothing and reports every row."""
    exam_id = scope.exam_id
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type != "text/csv":
        raise UnsupportedMediaType("send the roster as text/csv", reason="csv_required")
    exam = await _refuse_cancelled(runtime, exam_id)
    parsed = await roster.parse(request.stream(), exam_id, runtime.settings.max_roster_rows)
    return await runtime.exams.import_roster(exam, parsed)


@router.get("/{exam_id}/rooms")
async def list_rooms(scope: ExamScopeDep, runtime: RuntimeDep) -> dict[str, Any]:
    rooms = await runtime.exams.rooms(scope.exam_id)
    staff = scope.principal
    if staff.role == "proctor":
        mine = {
            r.split("/", 1)[1]
            for r in await runtime.exams.proctor_rooms(staff.name)
            if r.split("/", 1)[0] == scope.exam_id
        }
        rooms = {room: n for room, n in rooms.items() if room in mine}
    return {"rooms": rooms}


@router.put("/{exam_id}/rooms/{room_id}/proctors/{username}", status_code=204)
async def assign_proctor(
    scope: OrganiserExamDep, room_id: Identifier, username: Username, runtime: RuntimeDep
) -> None:
    exam_id = scope.exam_id
    if room_id not in await runtime.exams.rooms(exam_id):
        raise NotFound("no such room", reason="room_not_found")
    if await runtime.staff.role(username) != "proctor":
        raise NotFound("no such proctor", reason="proctor_not_found")
    await _refuse_cancelled(runtime, exam_id)
    await runtime.exams.assign_proctor(exam_id, room_id, username)


@router.delete("/{exam_id}/rooms/{room_id}/proctors/{username}", status_code=204)
async def unassign_proctor(
    scope: OrganiserExamDep, room_id: Identifier, username: Username, runtime: RuntimeDep
) -> None:
    """Take a proctor off a room: their next request for it answers 404, and the room's
    cameras they watch by WHEP from their current login are closed now."""
    exam_id = scope.exam_id
    if not await runtime.exams.unassign_proctor(exam_id, room_id, username):
        raise NotFound("not a proctor of this room", reason="proctor_not_found")
    await _close_room_watches(runtime, exam_id, room_id, username)
    event = {"type": "proctor_left", "proctor": username, "why": "unassigned"}
    await runtime.rooms.append(
        keys.room_key(exam_id, room_id), {**event, "by": scope.principal.name}
    )


async def _close_room_watches(runtime: RuntimeDep, exam_id: str, room: str, username: str) -> None:
    """Close the WHEP sessions of the proctor's current login that watch `room` (those of
    other rooms go on); each session's id set is bounded by the WHEP route's limits."""
    sid = await runtime.redis.get(keys.active_session_key("proctor", None, username))
    if sid is None:
        return
    for member in await runtime.redis.smembers(keys.session_whep_key(text(sid))):
        session = await runtime.media.sessions.get(text(member))
        if (
            session is not None
            and session.owner == f"staff:{username}"
            and (session.exam, session.room) == (exam_id, room)
        ):
            await close_quietly(runtime, session)
            await runtime.media.sessions.remove(session)


@router.put("/{exam_id}/staff/{username}", status_code=204)
async def assign_exam_staff(
    scope: OrganiserExamDep, username: Username, runtime: RuntimeDep
) -> None:
    """Assign a chief proctor (every room, live) or an examiner (recordings and grading) to
    the whole exam; the account's role says which."""
    role = await runtime.staff.role(username)
    if role not in EXAM_WIDE_ROLES:
        raise NotFound("no such chief proctor or examiner", reason="staff_not_found")
    await runtime.exams.assign_exam_staff(scope.exam_id, role, username)


@router.delete("/{exam_id}/staff/{username}", status_code=204)
async def unassign_exam_staff(
    scope: OrganiserExamDep, username: Username, runtime: RuntimeDep
) -> None:
    role = await runtime.staff.role(username)
    if role not in EXAM_WIDE_ROLES or username not in await runtime.exams.exam_staff(
        scope.exam_id, role
    ):
        raise NotFound("not assigned to this exam", reason="staff_not_found")
    await runtime.exams.unassign_exam_staff(scope.exam_id, role, username)


@router.get("/{exam_id}/staff")
async def list_exam_staff(scope: OrganiserExamDep, runtime: RuntimeDep) -> dict[str, list[str]]:
    return {role: await runtime.exams.exam_staff(scope.exam_id, role) for role in EXAM_WIDE_ROLES}


@router.post("/{exam_id}/candidates/{candidate_id}/guardian-consent", status_code=204)
async def guardian_consent(
    scope: OrganiserExamDep, candidate_id: Identifier, body: GuardianConsentIn, runtime: RuntimeDep
) -> None:
    exam_id = scope.exam_id
    if await runtime.exams.candidate(exam_id, candidate_id) is None:
        raise NotFound("no such candidate", reason="candidate_not_found")
    await runtime.exams.record_consent(exam_id, candidate_id, "guardian", body.reference)


@router.post("/{exam_id}/extend")
async def extend_exam(scope: OrganiserExamDep, body: ExtendIn, runtime: RuntimeDep) -> Exam:
    """Move the exam's end `minutes` later, for everyone; journaled in each of its rooms."""
    await _refuse_cancelled(runtime, scope.exam_id)
    exam = await runtime.exams.extend(scope.exam_id, body.minutes)
    event = {
        "type": "exam_extended",
        "minutes": body.minutes,
        "ends_at": exam.ends_at.isoformat(),
        "by": scope.principal.name,
    }
    await _journal_everywhere(runtime, exam.id, event)
    return exam


@router.put("/{exam_id}/candidates/{candidate_id}/accommodation", status_code=201)
async def set_accommodation(
    scope: OrganiserExamDep, candidate_id: Identifier, body: AccommodationIn, runtime: RuntimeDep
) -> EventOut:
    """A candidate's extra minutes (0: none), added to their late cut-off and their end;
    journaled in their room."""
    exam_id = scope.exam_id
    candidate = await runtime.exams.candidate(exam_id, candidate_id)
    if candidate is None:
        raise NotFound("no such candidate", reason="candidate_not_found")
    await runtime.exams.set_accommodation(exam_id, candidate_id, body.extra_minutes)
    exam = await runtime.exams.get(exam_id)
    moved = replace(candidate, extra_minutes=body.extra_minutes)
    schedule = runtime.exams.schedule(exam, moved)
    event = {
        "type": "accommodation",
        "cid": candidate_id,
        "extra_minutes": body.extra_minutes,
        # Their new late cut-off and end, Unix seconds (the console's readmit button).
        "late_after": schedule.late_after.timestamp(),
        "ends_at": schedule.ends_at.timestamp(),
        "by": scope.principal.name,
    }
    room = keys.room_key(exam_id, candidate.room)
    return EventOut(event_id=await runtime.rooms.append(room, event))
