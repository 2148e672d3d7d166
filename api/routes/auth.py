"""Logging in and out: candidates by exam number + candidate number, staff by password."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from actors.accounts.sessions import WRONG_CREDENTIALS, Session
from api.client_address import client_address
from api.deps import RuntimeDep
from api.media_http import end_candidate_sessions, end_staff_sessions
from api.models import Login, SessionOut, StaffLogin
from api.security import COOKIE_NAME, PrincipalDep
from core import keys
from infra.errors import Unauthenticated

router = APIRouter(prefix="/v1", tags=["sessions"])


def _client_ip(request: Request, runtime: RuntimeDep) -> str:
    return client_address(request, runtime.settings.trusted_proxies)


def _issue(response: Response, runtime: RuntimeDep, session: Session) -> None:
    response.set_cookie(
        COOKIE_NAME,
        session.token,
        max_age=runtime.settings.session_ttl_seconds,
        httponly=True,
        secure=runtime.settings.cookie_secure,
        samesite="strict",
        path="/",
    )


@router.post("/sessions", status_code=201)
async def candidate_login(
    body: Login, request: Request, response: Response, runtime: RuntimeDep
) -> SessionOut:
    cid = runtime.exams.candidate_id(body.exam_no, body.candidate_no)
    # The window and the cancellation are checked with the pair, in the login's script:
    # an unknown exam has neither, and answers as a wrong pair does; a cancelled one is
    # told only to a right pair, so that an exam id alone learns nothing, for free.
    exam = await runtime.exams.find(body.exam_no)
    cancelled = exam is not None and exam.cancelled
    opens_at = runtime.exams.login_opens(exam) if exam is not None and not cancelled else None
    session, room = await runtime.sessions.candidate_login(
        _client_ip(request, runtime), body.exam_no, cid, opens_at, cancelled=cancelled
    )
    if session.replaced is not None:
        await runtime.rooms.append(
            keys.room_key(body.exam_no, room),
            {"type": "session_replaced", "cid": cid},
        )
    _issue(response, runtime, session)
    return SessionOut(
        token=session.token,
        role="candidate",
        expires_at=session.claims.exp,
        exam=body.exam_no,
        room=room,
        candidate=cid,
    )


@router.post("/staff/sessions", status_code=201)
async def staff_login(
    body: StaffLogin, request: Request, response: Response, runtime: RuntimeDep
) -> SessionOut:
    sessions = runtime.sessions
    source = _client_ip(request, runtime)
    await sessions.staff_attempt(source, body.username)
    role = await runtime.staff.authenticate(body.username, body.password)
    if role is None:
        raise Unauthenticated("username or password is wrong", reason=WRONG_CREDENTIALS)
    await sessions.staff_succeeded(source, body.username)
    session = await sessions.open(body.username, role, None, None)  # type: ignore[arg-type]
    _issue(response, runtime, session)
    return SessionOut(token=session.token, role=role, expires_at=session.claims.exp)


@router.delete("/sessions/current", status_code=204)
async def logout(principal: PrincipalDep, response: Response, runtime: RuntimeDep) -> None:
    await runtime.sessions.close(principal.claims)
    if principal.role != "candidate":
        # After the close: a watch being set up meanwhile either is in the set read here
        # or finds the session gone once it has subscribed, and ends itself (`whep.watch`).
        await end_staff_sessions(runtime, principal.claims.sid, f"staff:{principal.name}")
    if principal.role == "candidate" and principal.claims.exam:
        # After the close, as a proctor's end does it: the phone's pairing token dies with
        # the session (`Pairing.resolve`), but media already flowing would go on until its
        # peer went away by itself, so the camera, screen, side camera and talk-back
        # listeners end on their shards now.
        await end_candidate_sessions(runtime, principal.claims.exam, principal.name)
    if principal.role == "candidate" and principal.claims.exam and principal.room:
        await runtime.rooms.append(
            keys.room_key(principal.claims.exam, principal.room),
            {"type": "left", "cid": principal.name},
        )
    response.delete_cookie(COOKIE_NAME, path="/")
