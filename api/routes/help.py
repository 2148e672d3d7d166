"""A candidate asks the room's proctors for help: a raised hand, or a short message.

Room messages were staff-only, so a candidate with a question had no way to ask it but
to wave at the camera. Each request is journaled in the candidate's room like every
other room event (`help`, `help_lowered`), so the proctor's console sees it arrive on
the room's event stream and the evidence keeps it. The proctor answers with
`POST /v1/exams/{e}/rooms/{r}/messages` (`to`: the candidate), which the candidate's
page shows from `GET /v1/me/room`. A message's text may say anything about the candidate
(their name, their phone, their health): it is sealed with the exam's data key before it
leaves the gateway (`core.room_text`), so the room's journal and state hold it sealed.

    POST   /v1/me/help   {"kind": "hand"} | {"kind": "message", "text": "..."}  -> 201 {event_id}
    DELETE /v1/me/help   the candidate lowers the hand                         -> 200 {event_id}

Both spend the candidate's help budget (`help_requests_per_minute`, 429 `help_limit` with
Retry-After): every request lands in a proctor's view and an evidence stream that is
never trimmed, so a held-down key must not flood either.
"""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import RuntimeDep
from api.models import EventOut, HelpIn
from api.security import CandidateDep, Principal, require_consent
from core import keys, room_text
from infra.errors import InvalidInput, NotFound
from infra.redis import spend

router = APIRouter(prefix="/v1/me", tags=["candidate"])

HELP_WINDOW_S = 60


async def _may_ask(runtime: RuntimeDep, principal: Principal) -> str:
    """The candidate's room key, once their consent and schedule let them be in the room
    (403 `consent_required`, `not_started`, `too_late`, `exam_over`: the join's rules)."""
    exam_id, room = principal.claims.exam, principal.room
    if exam_id is None or room is None:
        raise NotFound("no such candidate", reason="candidate_not_found")
    candidate = await runtime.exams.candidate(exam_id, principal.name)
    if candidate is None:
        raise NotFound("no such candidate", reason="candidate_not_found")
    exam = await runtime.exams.get(exam_id)
    require_consent(candidate, exam)
    runtime.exams.check_schedule(exam, candidate, "join")
    await spend(
        runtime.redis,
        keys.help_rate_key(exam_id, principal.name),
        HELP_WINDOW_S,
        runtime.settings.help_requests_per_minute,
        refusal="too many help requests: the proctor has seen yours",
        reason="help_limit",
    )
    return keys.room_key(exam_id, room)


@router.post("/help", status_code=201)
async def ask_for_help(body: HelpIn, principal: CandidateDep, runtime: RuntimeDep) -> EventOut:
    # Checked before the budget is spent: a malformed request costs nothing and stores nothing.
    if body.kind == "message" and body.text is None:
        raise InvalidInput("a message needs its text", reason="text_required")
    if body.kind == "hand" and body.text is not None:
        raise InvalidInput("a raised hand carries no text", reason="text_not_allowed")
    room = await _may_ask(runtime, principal)
    assert principal.claims.exam is not None  # `_may_ask` refused a principal without one
    event = {"type": "help", "cid": principal.name, "kind": body.kind, "text": body.text}
    event = await room_text.sealed(runtime.exams.keys, principal.claims.exam, event)
    return EventOut(event_id=await runtime.rooms.append(room, event))


@router.delete("/help", status_code=200)
async def lower_hand(principal: CandidateDep, runtime: RuntimeDep) -> EventOut:
    room = await _may_ask(runtime, principal)
    event = {"type": "help_lowered", "cid": principal.name}
    return EventOut(event_id=await runtime.rooms.append(room, event))
