"""The biometric consent, guardians' own consent links, and the withdrawal of each consent.

Biometric data (a face template) is sensitive personal information: it has its own
consent, given or refused apart from the policy. A refusal is journaled into the room
as `manual_id_check`, so the room's proctors check the candidate's identity by hand,
and the join gate then asks for no face verification. A minor's guardian consents by a
one-time link the organiser or the candidate's page makes (method `link`), or the
organiser records it (method `organiser`, `POST .../guardian-consent`).

Withdrawing a consent (`DELETE /v1/me/consents/{kind}`) does what
`core.policies.WITHDRAWAL` says, for the policy, biometric, third-party and guardian
consents alike; every withdrawal is a dated consent record.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import StrictBool, StringConstraints

from api.deps import RuntimeDep
from api.media_http import end_candidate_sessions
from api.models import Strict
from api.security import CandidateDep, ConsentedDep, OrganiserExamDep, Principal
from core import keys
from core.exam import Identifier
from core.exams import Candidate
from core.guardian import GuardianLinks
from core.policies import BIOMETRIC_VERSION, WITHDRAWAL, PolicyStore
from infra.errors import Conflict, NotFound

router = APIRouter(tags=["privacy"])

WithdrawnKind = Literal["policy", "biometric", "third-party", "guardian"]
LinkToken = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{20,64}$")]


class BiometricConsentIn(Strict):
    allow: StrictBool  # "yes" is not an answer to a consent


class GuardianLinkIn(Strict):
    token: LinkToken


class GuardianConsentByLinkIn(Strict):
    token: LinkToken
    accept: Literal[True]


async def _candidate(runtime: RuntimeDep, principal: Principal) -> Candidate:
    exam_id = principal.claims.exam
    candidate = None if exam_id is None else await runtime.exams.candidate(exam_id, principal.name)
    if candidate is None:
        raise NotFound("no such candidate", reason="candidate_not_found")
    return candidate


async def _manual_check(runtime: RuntimeDep, candidate: Candidate, why: str) -> None:
    event = {"type": "manual_id_check", "cid": candidate.cid, "why": why}
    await runtime.rooms.append(keys.room_key(candidate.exam, candidate.room), event)


@router.post("/v1/me/consents/biometric", status_code=204)
async def biometric_consent(
    body: BiometricConsentIn, consented: ConsentedDep, runtime: RuntimeDep
) -> None:
    """Give (`allow: true`) or refuse the biometric consent; a refusal asks the room's
    proctors for a manual identity check."""
    candidate = consented.candidate
    value = f"{'granted' if body.allow else 'refused'}:{BIOMETRIC_VERSION}"
    await runtime.exams.record_consent(candidate.exam, candidate.cid, "biometric", value)
    if not body.allow:
        await _manual_check(runtime, candidate, "biometric_refused")


@router.delete("/v1/me/consents/{kind}")
async def withdraw(
    kind: WithdrawnKind, principal: CandidateDep, runtime: RuntimeDep
) -> dict[str, Any]:
    """Withdraw one consent; the answer says what the withdrawal means, in both languages."""
    candidate = await _candidate(runtime, principal)
    exam = await runtime.exams.get(candidate.exam)
    name = kind.replace("-", "_")
    version = BIOMETRIC_VERSION if name == "biometric" else exam.policy_version
    if name == "guardian" and not candidate.minor:
        raise Conflict("only a minor's guardian consent can be withdrawn", reason="not_a_minor")
    await runtime.exams.withdraw_consent(candidate.exam, candidate.cid, name, version)
    done: dict[str, Any] = {"kind": name, "meaning": WITHDRAWAL[name]}
    room = keys.room_key(candidate.exam, candidate.room)
    if name in ("policy", "guardian"):
        # Nothing more may be collected: the live media ends now, and join and publish
        # are refused until the consent is given again.
        await end_candidate_sessions(runtime, candidate.exam, candidate.cid)
        await runtime.rooms.append(
            room, {"type": "consent_withdrawn", "cid": candidate.cid, "kind": name}
        )
    elif name == "biometric":
        # The template and enrolment photo go now, verified gone and receipted, by the
        # region's retention actor (the one way anything personal is deleted).
        summary = await runtime.privacy.delete_face(candidate.exam, candidate.cid)
        done["receipts"] = summary["receipts"]
        await _manual_check(runtime, candidate, "biometric_withdrawn")
    return done


# -- guardians' links --------------------------------------------------------------------


async def _mint(runtime: RuntimeDep, candidate: Candidate, by: str) -> dict[str, object]:
    if not candidate.minor:
        raise Conflict("only a minor needs a guardian's consent", reason="not_a_minor")
    ttl = runtime.settings.rights.guardian_link_seconds
    return await GuardianLinks(runtime.redis).mint(candidate.exam, candidate.cid, ttl, by)


@router.post("/v1/me/guardian-link", status_code=201)
async def my_guardian_link(principal: CandidateDep, runtime: RuntimeDep) -> dict[str, object]:
    """A one-time link for the caller's guardian (a minor's page shows it to pass on)."""
    return await _mint(runtime, await _candidate(runtime, principal), "candidate")


@router.post("/v1/exams/{exam_id}/candidates/{candidate_id}/guardian-link", status_code=201)
async def guardian_link(
    scope: OrganiserExamDep, candidate_id: Identifier, runtime: RuntimeDep
) -> dict[str, object]:
    candidate = await runtime.exams.candidate(scope.exam_id, candidate_id)
    if candidate is None:
        raise NotFound("no such candidate", reason="candidate_not_found")
    return await _mint(runtime, candidate, "organiser")


@router.post("/v1/guardian/policy")
async def guardian_policy(body: GuardianLinkIn, runtime: RuntimeDep) -> dict[str, Any]:
    """What the guardian consents to, for a valid link (the link stays usable)."""
    exam_id, _cid = await GuardianLinks(runtime.redis).peek(body.token)
    exam = await runtime.exams.get(exam_id)
    view = await PolicyStore(runtime.redis).view(exam)
    return {"exam": {"title": exam.title, "starts_at": exam.starts_at}, **view}


@router.post("/v1/guardian/consent", status_code=204)
async def guardian_consent_by_link(body: GuardianConsentByLinkIn, runtime: RuntimeDep) -> None:
    exam_id, cid, reference = await GuardianLinks(runtime.redis).take(body.token)
    await runtime.exams.record_consent(exam_id, cid, "guardian", reference, method="link")
