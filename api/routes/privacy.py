"""Data-subject rights and consent records.

A candidate downloads a copy of their data and asks for its deletion (refused
while a legal hold applies, with the hold's reference and reason); they give
or withdraw consent to sharing with third parties (off until given). Every
route under `/v1/me` acts on the caller only, and a copy or a deletion request costs
work bounded by the caller's own data, at most `subject_requests_per_window` of them
per window (429 `subject_request_limit`). Organisers export the consent
records of their exam, run retention on it now, and read its deletion receipts.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from api.deps import RuntimeDep
from api.models import ThirdPartyConsentIn
from api.security import CandidateDep, OrganiserExamDep, Principal
from infra.errors import NotFound

router = APIRouter(tags=["privacy"])
MAX_SEGMENTS = 10_000


async def _exam_of(runtime: RuntimeDep, principal: Principal) -> tuple[Any, str]:
    exam_id, room = principal.claims.exam, principal.room
    if (
        exam_id is None
        or room is None
        or await runtime.exams.candidate(exam_id, principal.name) is None
    ):
        raise NotFound("no such candidate", reason="candidate_not_found")
    return await runtime.exams.get(exam_id), room


@router.get("/v1/me/data")
async def my_data(principal: CandidateDep, runtime: RuntimeDep) -> dict[str, Any]:
    """A copy of the caller's data: consents, timeline events, uploads, recordings index."""
    exam, room = await _exam_of(runtime, principal)
    await runtime.privacy.spend_subject_request(exam.id, principal.name)
    copy = await runtime.privacy.subject_copy(exam, principal.name, room)
    segments = await runtime.media.recordings.between(
        exam.id, principal.name, 0.0, time.time(), lookback=0.0, limit=MAX_SEGMENTS
    )
    copy["recordings"] = [
        {
            "name": s.name,
            "source": s.source,
            "start": s.start,
            "end": s.end,
            "bytes": s.byte_size,
            "media_type": s.media_type,
        }
        for s in segments
    ]
    return copy


@router.post("/v1/me/deletion-request")
async def deletion_request(principal: CandidateDep, runtime: RuntimeDep) -> dict[str, Any]:
    """Delete the caller's data: now if the exam is over, else scheduled for its end."""
    exam, _room = await _exam_of(runtime, principal)
    await runtime.privacy.spend_subject_request(exam.id, principal.name)
    return await runtime.privacy.request_deletion(exam, principal.name)


@router.post("/v1/me/consents/third-party", status_code=204)
async def third_party_consent(
    body: ThirdPartyConsentIn, principal: CandidateDep, runtime: RuntimeDep
) -> None:
    exam, _room = await _exam_of(runtime, principal)
    value = f"{'granted' if body.allow else 'withdrawn'}:{exam.policy_version}"
    await runtime.exams.record_consent(exam.id, principal.name, "third_party", value)


@router.get("/v1/me/consents")
async def my_consents(principal: CandidateDep, runtime: RuntimeDep) -> dict[str, Any]:
    exam, _room = await _exam_of(runtime, principal)
    return {
        "records": await runtime.privacy.consents(exam.id, principal.name),
        "third_party_sharing": await runtime.privacy.third_party(exam.id, principal.name),
    }


@router.get("/v1/exams/{exam_id}/consents")
async def exam_consents(scope: OrganiserExamDep, runtime: RuntimeDep) -> dict[str, Any]:
    """Every consent record of the exam (policy versions, guardians, third-party sharing)."""
    exam = await runtime.exams.get(scope.exam_id)
    return {
        "exam": exam.id,
        "policy_version": exam.policy_version,
        "records": await runtime.privacy.consents(exam.id),
    }


@router.post("/v1/exams/{exam_id}/retention/runs")
async def run_retention(scope: OrganiserExamDep, runtime: RuntimeDep) -> dict[str, Any]:
    """Apply the exam's retention policy now instead of at the next periodic sweep."""
    return await runtime.privacy.run_retention(scope.exam_id)


@router.get("/v1/exams/{exam_id}/retention/receipts")
async def receipts(scope: OrganiserExamDep, runtime: RuntimeDep) -> dict[str, Any]:
    """The exam's entries of its region's audit chain: deletion receipts, holds, exports."""
    return {"entries": await runtime.privacy.receipts(scope.exam_id)}
