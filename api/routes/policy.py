"""Privacy policy versions: the organiser publishes one, candidates read what changed.

A published version becomes the exam's current one at once, so every candidate who
accepted an older version is refused 403 `consent_required` (join, publish, uploads,
face) until they accept again: their page reads `GET /v1/me/policy` to show the text
and the changes since the version they accepted.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import RuntimeDep
from api.security import CandidateDep, OrganiserExamDep
from core.policies import PolicyStore, PolicyVersionIn
from infra.errors import NotFound

router = APIRouter(tags=["privacy"])


@router.put("/v1/exams/{exam_id}/policy")
async def publish_policy(
    body: PolicyVersionIn, scope: OrganiserExamDep, runtime: RuntimeDep
) -> dict[str, Any]:
    store = PolicyStore(runtime.redis)
    await store.publish(scope.exam_id, body, scope.principal.name)
    return await store.view(await runtime.exams.get(scope.exam_id))


@router.get("/v1/exams/{exam_id}/policy")
async def exam_policy(scope: OrganiserExamDep, runtime: RuntimeDep) -> dict[str, Any]:
    store = PolicyStore(runtime.redis)
    view = await store.view(await runtime.exams.get(scope.exam_id))
    return {**view, "history": await store.versions(scope.exam_id)}


@router.get("/v1/me/policy")
async def my_policy(principal: CandidateDep, runtime: RuntimeDep) -> dict[str, Any]:
    exam_id = principal.claims.exam
    candidate = None if exam_id is None else await runtime.exams.candidate(exam_id, principal.name)
    if candidate is None:
        raise NotFound("no such candidate", reason="candidate_not_found")
    exam = await runtime.exams.get(candidate.exam)
    view = await PolicyStore(runtime.redis).view(exam, candidate.consent_version)
    return {**view, "biometric_consent": candidate.biometric_consent}
