"""Who is calling, and may they touch this exam, room or candidate?

Every id in a URL is checked against the caller here. Resources of another
exam or room answer 404 (a caller cannot even learn that they exist); a
role that may never use a route answers 403.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from api.deps import RuntimeDep
from core.exam import Exam, Identifier
from core.exams import Candidate
from core.policies import BIOMETRIC_VERSION
from infra.errors import Forbidden, NotFound, Unauthenticated
from infra.settings import Settings
from infra.tokens import EXAM_STAFF_ROLES, STAFF_ROLES, Claims, StaffRole

COOKIE_NAME = "examday_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Principal:
    claims: Claims
    room: str | None

    @property
    def role(self) -> str:
        return self.claims.role

    @property
    def name(self) -> str:
        return self.claims.sub


def optional_token(connection: HTTPConnection) -> str | None:
    """The caller's token: `Authorization: Bearer` (native clients) or the session cookie.

    A bearer token wins: a page cannot make a browser send one by itself, so such a
    request is not forgeable across origins and needs no `Origin`. The cookie is
    checked against `Origin` wherever it is the credential (see `check_origin`).
    """
    token, from_cookie = presented_token(connection)
    if from_cookie:
        check_origin(connection)
    return token


def presented_token(connection: HTTPConnection) -> tuple[str | None, bool]:
    """The token the request carries, bearer first, and whether it came in the cookie;
    not checked in any way (`optional_token` is the credential's one way in)."""
    header = connection.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None, False
    cookie = connection.cookies.get(COOKIE_NAME) or None
    return cookie, cookie is not None


def check_origin(connection: HTTPConnection) -> None:
    """Refuse a cookie-authenticated request that changes state, or opens a WebSocket,
    from a page of another origin.

    The browser attaches the cookie whoever's page sends the request. `SameSite=Strict`
    stops other *sites*, but a sibling subdomain or another port of the same host is the
    same site; and a WebSocket handshake is a GET that no CORS preflight guards. Browsers
    send `Origin` on every WebSocket handshake and every non-GET fetch or form post, so a
    missing one is refused too. Safe methods change nothing and pass.
    """
    if connection.scope["type"] == "http" and connection.scope["method"] in SAFE_METHODS:
        return
    settings: Settings = connection.app.state.settings
    origin = connection.headers.get("origin")
    if origin is None or origin.lower() not in settings.allowed_origins:
        raise Forbidden(
            "requests with the session cookie must come from this site's own pages",
            reason="bad_origin",
        )


def request_token(connection: HTTPConnection) -> str:
    token = optional_token(connection)
    if token is None:
        raise Unauthenticated("log in first", reason="no_session")
    return token


async def current_principal(connection: HTTPConnection, runtime: RuntimeDep) -> Principal:
    claims, record = await runtime.sessions.resolve(request_token(connection))
    return Principal(claims, record.get("room"))


PrincipalDep = Annotated[Principal, Depends(current_principal)]


async def current_candidate(principal: PrincipalDep) -> Principal:
    if principal.role != "candidate":
        raise Forbidden("candidates only", reason="candidates_only")
    return principal


async def current_staff(principal: PrincipalDep) -> Principal:
    """Exam staff who work in rooms: proctors, chief proctors and organisers.

    Admins and release managers are staff too, but their work touches no exam's
    rooms, media or logs, so they are refused here (see `current_staff_member`);
    examiners grade recordings after the exam and have routes of their own
    (`examiner_exam_scope`), never a live room.
    """
    if principal.role not in ("proctor", "chief-proctor", "organiser"):
        raise Forbidden("staff only", reason="staff_only")
    return principal


async def current_staff_member(principal: PrincipalDep) -> Principal:
    """Any staff role, for what every staff member does alike (who am I)."""
    if principal.role not in STAFF_ROLES:
        raise Forbidden("staff only", reason="staff_only")
    return principal


async def current_organiser(principal: PrincipalDep) -> Principal:
    if principal.role != "organiser":
        raise Forbidden("organisers only", reason="organisers_only")
    return principal


async def current_account_maker(principal: PrincipalDep) -> Principal:
    """Who may create staff accounts at all: admins (any role), organisers (proctors only,
    checked against the body by `check_may_create`)."""
    if principal.role not in ("admin", "organiser"):
        raise Forbidden("admins and organisers only", reason="admins_only")
    return principal


async def current_release_manager(principal: PrincipalDep) -> Principal:
    """Release managers only: an installer they publish runs on every device of every exam.

    Admins are refused too. They could make themselves a release manager's account, but
    that takes a second, named account whose creator is recorded; keeping the signing
    of installers to one role keeps a stolen admin session from pushing one directly, and
    keeps every release and rollout step under the name of someone chosen for it.
    """
    if principal.role != "release-manager":
        raise Forbidden("release managers only", reason="release_managers_only")
    return principal


CandidateDep = Annotated[Principal, Depends(current_candidate)]
StaffDep = Annotated[Principal, Depends(current_staff)]
StaffMemberDep = Annotated[Principal, Depends(current_staff_member)]
OrganiserDep = Annotated[Principal, Depends(current_organiser)]
AccountMakerDep = Annotated[Principal, Depends(current_account_maker)]
ReleaseManagerDep = Annotated[Principal, Depends(current_release_manager)]


def check_may_create(maker: Principal, role: StaffRole) -> None:
    """Organisers make the staff of their exams (proctors, chief proctors, examiners); every
    role with power beyond one exam (organisers, admins, release managers) is made by an
    admin only."""
    if role not in EXAM_STAFF_ROLES and maker.role != "admin":
        raise Forbidden(f"only an admin creates a {role}'s account", reason="admins_only")


async def check_exam(runtime: RuntimeDep, principal: Principal, exam_id: str) -> None:
    """Organisers reach their own exams, chief proctors and examiners the exams assigned to
    them, proctors exams with a room of theirs."""
    if principal.role in ("organiser", "chief-proctor", "examiner"):
        if exam_id in await runtime.exams.staff_exams(principal.name):
            return
    elif principal.role == "proctor":
        rooms = await runtime.exams.proctor_rooms(principal.name)
        if any(r.split("/", 1)[0] == exam_id for r in rooms):
            return
    raise NotFound("no such exam", reason="exam_not_found")


async def check_room(runtime: RuntimeDep, principal: Principal, exam_id: str, room_id: str) -> None:
    if principal.role in ("organiser", "chief-proctor"):
        await check_exam(runtime, principal, exam_id)
        if room_id in await runtime.exams.rooms(exam_id):
            return
    elif principal.role == "proctor":
        if f"{exam_id}/{room_id}" in await runtime.exams.proctor_rooms(principal.name):
            return
    elif principal.role == "candidate" and (principal.claims.exam, principal.room) == (
        exam_id,
        room_id,
    ):
        return
    raise NotFound("no such room", reason="room_not_found")


async def check_candidate_in_room(
    runtime: RuntimeDep, exam_id: str, room_id: str, cid: str
) -> None:
    candidate = await runtime.exams.candidate(exam_id, cid)
    if candidate is None or candidate.room != room_id:
        raise NotFound("no such candidate in this room", reason="candidate_not_found")


def require_consent(candidate: Candidate, exam: Exam) -> None:
    """A candidate joins a room and sends audio and video only with the current consent to
    the exam's privacy policy (and a guardian's, for a minor), and not after withdrawing
    from the exam."""
    if candidate.withdrawn:
        raise Forbidden("you withdrew from this exam", reason="withdrawn")
    if candidate.consent_version != exam.policy_version:
        raise Forbidden("accept the current privacy policy first", reason="consent_required")
    if candidate.minor and not candidate.has_guardian_consent:
        raise Forbidden("a guardian's consent is needed first", reason="guardian_consent_required")


@dataclass(frozen=True)
class Consented:
    """A candidate who may give personal data now: their record and their exam."""

    principal: Principal
    candidate: Candidate
    exam: Exam


async def consented_candidate(principal: CandidateDep, runtime: RuntimeDep) -> Consented:
    """Every route that collects a candidate's personal data (face, photos, whiteboards,
    logs tied to them, media) depends on this: the policy consent and the guardian gate
    are checked before the body is read, so nothing of a refused request is stored."""
    exam_id = principal.claims.exam
    candidate = None if exam_id is None else await runtime.exams.candidate(exam_id, principal.name)
    if candidate is None:
        raise NotFound("no such candidate", reason="candidate_not_found")
    exam = await runtime.exams.get(candidate.exam)
    require_consent(candidate, exam)
    return Consented(principal, candidate, exam)


ConsentedDep = Annotated[Consented, Depends(consented_candidate)]


def require_biometric(candidate: Candidate) -> None:
    """Face templates are sensitive personal information: they are made and compared only
    with the separate biometric consent (its own version). A candidate who refused it is
    checked by a proctor by hand instead."""
    if candidate.biometric_consent != BIOMETRIC_VERSION:
        raise Forbidden(
            "give the biometric consent first, or ask for a manual identity check",
            reason="biometric_consent_required",
            version=BIOMETRIC_VERSION,
        )


async def biometric_candidate(consented: ConsentedDep) -> Consented:
    require_biometric(consented.candidate)
    return consented


BiometricDep = Annotated[Consented, Depends(biometric_candidate)]


# -- Scopes as dependencies: checked before the body is even parsed, so a caller
# -- of another exam or room learns nothing, whatever they send.


@dataclass(frozen=True)
class ExamScope:
    principal: Principal
    exam_id: str


@dataclass(frozen=True)
class RoomScope:
    principal: Principal
    exam_id: str
    room_id: str

    @property
    def key(self) -> str:
        return f"{self.exam_id}/{self.room_id}"


@dataclass(frozen=True)
class CandidateScope:
    room: RoomScope
    candidate_id: str


async def exam_scope(exam_id: Identifier, staff: StaffDep, runtime: RuntimeDep) -> ExamScope:
    await check_exam(runtime, staff, exam_id)
    return ExamScope(staff, exam_id)


async def organiser_exam_scope(
    exam_id: Identifier, organiser: OrganiserDep, runtime: RuntimeDep
) -> ExamScope:
    await check_exam(runtime, organiser, exam_id)
    return ExamScope(organiser, exam_id)


async def hold_release_scope(
    exam_id: Identifier, principal: PrincipalDep, runtime: RuntimeDep
) -> ExamScope:
    """The exam's organisers, or an admin on any exam that exists: who may list and release
    legal holds. Which hold a caller may release is the hold's own rule (its placer, or an
    admin: `Holds.release`); an admin reaches no other route of an exam through this."""
    if principal.role == "admin":
        await runtime.exams.get(exam_id)  # 404 `exam_not_found` for an exam that is not
        return ExamScope(principal, exam_id)
    if principal.role != "organiser":
        raise Forbidden("organisers and admins only", reason="organisers_or_admins_only")
    await check_exam(runtime, principal, exam_id)
    return ExamScope(principal, exam_id)


async def examiner_exam_scope(
    exam_id: Identifier, principal: PrincipalDep, runtime: RuntimeDep
) -> ExamScope:
    """An exam's examiners (assigned), chief proctors (assigned) and organisers: who review
    and grade its recordings after the fact. Proctors are refused: they watch rooms live."""
    if principal.role not in ("examiner", "chief-proctor", "organiser"):
        raise Forbidden("examiners, chief proctors and organisers only", reason="reviewers_only")
    await check_exam(runtime, principal, exam_id)
    return ExamScope(principal, exam_id)


async def room_scope(
    exam_id: Identifier, room_id: Identifier, staff: StaffDep, runtime: RuntimeDep
) -> RoomScope:
    await check_room(runtime, staff, exam_id, room_id)
    return RoomScope(staff, exam_id, room_id)


RoomScopeDep = Annotated[RoomScope, Depends(room_scope)]


async def candidate_scope(
    room: RoomScopeDep, candidate_id: Identifier, runtime: RuntimeDep
) -> CandidateScope:
    await check_candidate_in_room(runtime, room.exam_id, room.room_id, candidate_id)
    return CandidateScope(room, candidate_id)


ExamScopeDep = Annotated[ExamScope, Depends(exam_scope)]
OrganiserExamDep = Annotated[ExamScope, Depends(organiser_exam_scope)]
HoldReleaseDep = Annotated[ExamScope, Depends(hold_release_scope)]
ReviewerExamDep = Annotated[ExamScope, Depends(examiner_exam_scope)]
CandidateScopeDep = Annotated[CandidateScope, Depends(candidate_scope)]
