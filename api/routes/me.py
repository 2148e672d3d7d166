"""The logged-in candidate: consent, joining the room, heartbeats, their own view."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Header

from api.deps import RuntimeDep
from api.exam_end import end_if_over
from api.models import ConsentIn, EventOut, HeartbeatIn, JoinIn, NetworkType
from api.security import CandidateDep, Principal, require_consent
from core import keys, room_text
from core.exams import Candidate
from infra.errors import InvalidInput, NotFound
from infra.redis import spend

router = APIRouter(prefix="/v1/me", tags=["candidate"])

# Sent before video on a mobile network (the seed app asks first), with a lighter profile.
NETWORK_ADVICE: dict[str, dict[str, Any]] = {
    "cellular": {
        "warning": "cellular_network",
        "message": "You are on a mobile network: video uses about 150 MB an hour.",
        "video": {"width": 320, "height": 240, "fps": 15, "max_kbps": 300},
    },
    "wifi": {"warning": None, "video": {"width": 640, "height": 480, "fps": 15, "max_kbps": 800}},
    "ethernet": {
        "warning": None,
        "video": {"width": 640, "height": 480, "fps": 15, "max_kbps": 800},
    },
    "unknown": {
        "warning": None,
        "video": {"width": 320, "height": 240, "fps": 15, "max_kbps": 500},
    },
}


async def _candidate(runtime: RuntimeDep, principal: Principal) -> Candidate:
    assert principal.claims.exam is not None
    candidate = await runtime.exams.candidate(principal.claims.exam, principal.name)
    if candidate is None:
        raise NotFound("no such candidate", reason="candidate_not_found")
    return candidate


@router.get("")
async def me(principal: CandidateDep, runtime: RuntimeDep) -> dict[str, Any]:
    candidate = await _candidate(runtime, principal)
    exam = await runtime.exams.get(candidate.exam)
    return {
        "candidate": candidate.cid,
        "exam": {
            "id": exam.id,
            "title": exam.title,
            "starts_at": exam.starts_at,
            "ends_at": exam.ends_at,
        },
        "room": candidate.room,
        "policy_version": exam.policy_version,
        "consented_version": candidate.consent_version,
        "needs_consent": candidate.consent_version != exam.policy_version,
        "needs_guardian_consent": candidate.minor and not candidate.has_guardian_consent,
        "minor": candidate.minor,
        "biometric_consent": candidate.biometric_consent,
        "biometric_refused": candidate.biometric_refused,
        "withdrawn": candidate.withdrawn,
        # The candidate's own times (accommodation included) and the gateway's clock, so
        # that the page counts down to the start whatever its own clock says.
        "schedule": {
            **runtime.exams.schedule(exam, candidate).as_json(),
            "now": datetime.now(UTC).isoformat(),
        },
    }


@router.post("/consent", status_code=204)
async def consent(body: ConsentIn, principal: CandidateDep, runtime: RuntimeDep) -> None:
    candidate = await _candidate(runtime, principal)
    exam = await runtime.exams.get(candidate.exam)
    if body.policy_version != exam.policy_version:
        raise InvalidInput(
            f"the current policy is version {exam.policy_version}",
            reason="stale_policy_version",
            current=exam.policy_version,
        )
    await runtime.exams.record_consent(candidate.exam, candidate.cid, "policy", body.policy_version)


@router.get("/network-advice")
async def network_advice(network: NetworkType, principal: CandidateDep) -> dict[str, Any]:
    return {"network": network, **NETWORK_ADVICE[network]}


@router.post("/join")
async def join(body: JoinIn, principal: CandidateDep, runtime: RuntimeDep) -> dict[str, Any]:
    candidate = await _candidate(runtime, principal)
    exam = await runtime.exams.get(candidate.exam)
    require_consent(candidate, exam)
    # Before the start, after the late cut-off (unless joined in time or readmitted) and
    # after the end: 403 `not_started`, `too_late`, `exam_over`.
    runtime.exams.check_schedule(exam, candidate, "join")
    # A candidate who refused (or withdrew) the biometric consent is checked by hand by a
    # proctor (`manual_id_check` in the room's journal), not by face.
    if exam.require_face_verification and not candidate.biometric_refused:
        await runtime.face.require_verified(candidate.exam, candidate.cid)
    result = await runtime.rooms.heartbeat(
        keys.room_key(candidate.exam, candidate.room),
        candidate.cid,
        body.network,
        uuid.uuid4().hex,
        join=True,
    )
    if not candidate.joined:
        await runtime.exams.mark_joined(candidate.exam, candidate.cid)
    return {**result, "room": candidate.room, "advice": NETWORK_ADVICE[body.network]}


@router.post("/heartbeat")
async def heartbeat(
    body: HeartbeatIn,
    principal: CandidateDep,
    runtime: RuntimeDep,
    idempotency_key: str | None = Header(default=None, max_length=64),
) -> EventOut:
    assert principal.claims.exam is not None
    assert principal.room is not None
    room = keys.room_key(principal.claims.exam, principal.room)
    await _heartbeat_budget(runtime, room, principal.name)
    await end_if_over(runtime, principal, room)
    result = await runtime.rooms.heartbeat(
        room, principal.name, body.network, idempotency_key or uuid.uuid4().hex
    )
    return EventOut(**result)


async def _heartbeat_budget(runtime: RuntimeDep, room: str, cid: str) -> None:
    """Count the beat in the candidate's minute (in Redis, so across gateways); refuse
    it over `heartbeats_per_minute`. Each beat is journaled and keeps a dedupe key, so
    a flood would cost the room's shard and Redis what no client needs."""
    key = keys.heartbeat_rate_key(room, cid)
    await spend(
        runtime.redis,
        key,
        60,
        runtime.settings.heartbeats_per_minute,
        refusal="too many heartbeats: one every few seconds is enough",
        reason="too_many_heartbeats",
    )


@router.get("/room")
async def my_room(principal: CandidateDep, runtime: RuntimeDep) -> dict[str, Any]:
    assert principal.claims.exam is not None
    assert principal.room is not None
    exam_id = principal.claims.exam
    room = keys.room_key(exam_id, principal.room)
    view = await runtime.rooms.candidate_view(room, principal.name)
    # The messages and the help request are sealed in the room (`core.room_text`).
    return await room_text.opened_candidate_view(runtime.exams.keys, exam_id, view)
