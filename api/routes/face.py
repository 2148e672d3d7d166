"""Face enrolment, 1:1 verification and liveness challenges.

A candidate's own face checks need the policy consent, the guardian gate and the
separate biometric consent (`api.security.BiometricDep`), checked before the body is
read; an organiser's enrolment is the organiser's act under the exam's terms.

Photos and frames are sent as the raw body (`image/jpeg`, `image/png` or `image/webp`);
a liveness answer is JSON with base64 frames, bounded in count and size. Every upload
stays under the gateway's body limit (`EXAMDAY_MAX_REQUEST_BYTES`).
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import Field, StringConstraints

from api.deps import RuntimeDep
from api.models import Strict
from api.security import BiometricDep, CandidateDep, OrganiserExamDep, Principal
from core.exam import Identifier
from infra.errors import Forbidden, MalformedInput, NotFound, PayloadTooLarge

router = APIRouter(tags=["face"])

# Hard caps of the schema; the configured limits (frame count, bytes) are checked after.
_MAX_FRAMES = 64
_MAX_FRAME_CHARS = 1_400_000
Nonce = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{16,64}$")]


class LivenessIn(Strict):
    frames: list[Annotated[str, StringConstraints(max_length=_MAX_FRAME_CHARS)]] = Field(
        max_length=_MAX_FRAMES
    )


def _exam_of(principal: Principal) -> str:
    assert principal.claims.exam is not None
    return principal.claims.exam


@router.put("/v1/exams/{exam_id}/candidates/{candidate_id}/face")
async def enrol_candidate(
    scope: OrganiserExamDep, candidate_id: Identifier, request: Request, runtime: RuntimeDep
) -> dict[str, Any]:
    """The organiser enrols (or re-enrols) a roster candidate from a photo."""
    if await runtime.exams.candidate(scope.exam_id, candidate_id) is None:
        raise NotFound("no such candidate", reason="candidate_not_found")
    exam = await runtime.exams.get(scope.exam_id)
    content_type = request.headers.get("content-type")
    image = await request.body()
    return await runtime.face.enrol(exam, candidate_id, image, content_type, "organiser")


@router.get("/v1/exams/{exam_id}/candidates/{candidate_id}/face")
async def candidate_face_status(
    scope: OrganiserExamDep, candidate_id: Identifier, runtime: RuntimeDep
) -> dict[str, Any]:
    if await runtime.exams.candidate(scope.exam_id, candidate_id) is None:
        raise NotFound("no such candidate", reason="candidate_not_found")
    return await runtime.face.status(await runtime.exams.get(scope.exam_id), candidate_id)


@router.put("/v1/me/face")
async def enrol_myself(
    request: Request, consented: BiometricDep, runtime: RuntimeDep
) -> dict[str, Any]:
    exam, principal = consented.exam, consented.principal
    if not exam.candidate_enrolment:
        raise Forbidden("This exam enrols candidates itself.", reason="candidate_enrolment_off")
    if datetime.now(UTC) >= exam.starts_at:
        raise Forbidden("Enrolment closed when the exam started.", reason="enrolment_closed")
    image = await request.body()
    return await runtime.face.enrol(
        exam, principal.name, image, request.headers.get("content-type"), "candidate"
    )


@router.get("/v1/me/verification")
async def my_verification(principal: CandidateDep, runtime: RuntimeDep) -> dict[str, Any]:
    exam = await runtime.exams.get(_exam_of(principal))
    return await runtime.face.status(exam, principal.name)


@router.post("/v1/me/verification")
async def verify_myself(
    request: Request, consented: BiometricDep, runtime: RuntimeDep
) -> dict[str, Any]:
    image = await request.body()
    return await runtime.face.verify(
        consented.exam, consented.candidate, image, request.headers.get("content-type")
    )


@router.post("/v1/me/liveness/challenges", status_code=201)
async def new_challenge(consented: BiometricDep, runtime: RuntimeDep) -> dict[str, Any]:
    return await runtime.face.new_challenge(consented.exam.id, consented.principal.name)


@router.post("/v1/me/liveness/challenges/{nonce}")
async def answer_challenge(
    nonce: Nonce, body: LivenessIn, consented: BiometricDep, runtime: RuntimeDep
) -> dict[str, Any]:
    limit = runtime.settings.verifier.max_frame_bytes
    frames = [_frame(index, data, limit) for index, data in enumerate(body.frames)]
    return await runtime.face.check_liveness(
        consented.exam.id, consented.principal.name, nonce, frames
    )


def _frame(index: int, data: str, limit: int) -> bytes:
    try:
        frame = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedInput(
            f"Frame {index} is not base64.", reason="bad_base64", frame=index
        ) from None
    if len(frame) > limit:
        raise PayloadTooLarge(
            f"Frame {index} is {len(frame)} bytes; the limit is {limit}.",
            reason="frame_too_large",
            frame=index,
        )
    return frame
