"""WHIP ingest (RFC 9725): candidates publish camera, screen and a side device; proctors talk back.

POST an SDP offer (`application/sdp`, Bearer token) to an endpoint and get
201 with the answer, `Location` (the session URL), `ETag` and a `Link` per
configured ICE server; PATCH the session URL with trickle-ICE fragments
(If-Match required) and DELETE it to stop.

If a media shard dies, its peer connections fail and the client POSTs its
offer again, from a new peer connection: the gateway sends it to the
restarted shard, or to another live one if it does not come back; 503 with
Retry-After means "again after that many seconds". A new session of the same
slot (a candidate's camera, say) replaces the old one.

    POST /v1/whip/me/camera, /v1/whip/me/screen     the candidate's session token
    POST /v1/whip/me/side                           the side device's pairing token, and
                                                    its Examday-Device id (see actors.media.pairing)
    POST /v1/whip/me/probe                          the candidate's session token, before the join
    POST /v1/whip/exams/{exam}/rooms/{room}/talkback[?to=cid]   a proctor: audio to one or all
    PATCH, DELETE /v1/whip/sessions/{id}
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from actors.media.pairing import DEVICE_HEADER
from actors.media.sessions import MediaSession, new_etag, new_session_id
from actors.media.tag import PROBE, SessionTag, Source
from api.deps import RuntimeDep
from api.media_http import (
    MediaCaller,
    MediaCallerDep,
    close_quietly,
    created,
    end_session,
    linked_options,
    may_publish,
    options,
    patch_session,
    read_offer,
)
from api.security import StaffDep, check_candidate_in_room, check_room
from core import keys
from core.exam import Identifier
from infra.errors import Forbidden
from infra.redis import spend

router = APIRouter(prefix="/v1/whip", tags=["media"])
SESSIONS = "/v1/whip/sessions"


@router.options("/me/camera")
@router.options("/me/screen")
@router.options("/me/side")
@router.options("/me/probe")
@router.options("/exams/{exam_id}/rooms/{room_id}/talkback")
async def endpoint_options(request: Request, runtime: RuntimeDep) -> Response:
    return await linked_options(request, runtime)


@router.options("/sessions/{session_id}")
async def session_options() -> Response:
    return options(post=False)


@router.post("/me/camera", status_code=201)
async def publish_camera(request: Request, caller: MediaCallerDep, runtime: RuntimeDep) -> Response:
    return await _publish_own("camera", request, caller, runtime)


@router.post("/me/screen", status_code=201)
async def publish_screen(request: Request, caller: MediaCallerDep, runtime: RuntimeDep) -> Response:
    return await _publish_own("screen", request, caller, runtime)


@router.post("/me/side", status_code=201)
async def publish_side(request: Request, caller: MediaCallerDep, runtime: RuntimeDep) -> Response:
    """The side device (paired by `POST /v1/me/pairing`), with its pairing token."""
    return await _publish_own("side", request, caller, runtime)


@router.post("/me/probe", status_code=201)
async def probe(request: Request, caller: MediaCallerDep, runtime: RuntimeDep) -> Response:
    """A short test session to the room's media shard, before the join, for the device check.

    The browser measures its link on it (getStats: the candidate pair's round trip, the
    bytes it sends): the same path, shard and ICE servers the camera will take, which a
    GET to the gateway does not cross. The shard neither records, samples nor forwards a
    probe and ends it after `media.probe_seconds`; a new probe replaces the candidate's
    previous one (at most one at a time), and each costs one of `media.probe_budget`
    per `media.probe_window_s` (429 `probe_limit`). Allowed from the time logins open
    to the exam's end (403 `login_not_open`, `exam_over`), with the current consent.
    """
    if caller.role != "candidate":
        raise Forbidden("candidates only", reason="candidates_only")
    assert caller.exam is not None
    candidate = await may_publish(runtime, caller.exam, caller.name)
    exam = await runtime.exams.get(caller.exam)
    runtime.exams.check_schedule(exam, candidate, "login")  # from the opening of logins...
    runtime.exams.check_schedule(exam, candidate, "heartbeat")  # ...to the exam's end
    offer = await read_offer(request, runtime.settings, publish=True)
    media = runtime.settings.media
    await spend(
        runtime.redis,
        keys.media_probe_budget_key(caller.exam, caller.name),
        media.probe_window_s,
        media.probe_budget,
        refusal=f"at most {media.probe_budget} probes per {media.probe_window_s} s",
        reason="probe_limit",
    )
    # The room is the roster's: a probe comes before the join that puts it in the session.
    tag = SessionTag(caller.exam, candidate.room, caller.name, PROBE)
    # Its record outlives the shard's session a little, then goes by itself.
    ttl = int(media.probe_seconds) + 60
    return await _publish(request, runtime, caller.owner, tag, offer, ttl=ttl)


@router.post("/exams/{exam_id}/rooms/{room_id}/talkback", status_code=201)
async def talkback(
    exam_id: Identifier,
    room_id: Identifier,
    request: Request,
    staff: StaffDep,
    runtime: RuntimeDep,
    to: Annotated[Identifier | None, Query()] = None,
) -> Response:
    """A proctor's audio to one candidate (`to`) or the whole room; candidates hear it by WHEP."""
    await check_room(runtime, staff, exam_id, room_id)
    if to is not None:
        await check_candidate_in_room(runtime, exam_id, room_id, to)
    offer = await read_offer(request, runtime.settings, publish=True)
    tag = SessionTag(exam_id, room_id, to, "talkback")
    return await _publish(request, runtime, f"staff:{staff.name}", tag, offer)


async def _publish_own(
    source: Source, request: Request, caller: MediaCaller, runtime: RuntimeDep
) -> Response:
    if caller.role not in ("candidate", "side"):
        raise Forbidden("candidates only", reason="candidates_only")
    if (source == "side") != (caller.role == "side"):
        raise Forbidden(
            "a paired side device publishes `side`; the candidate's own device the others",
            reason="wrong_device",
        )
    assert caller.exam is not None
    assert caller.room is not None
    candidate = await may_publish(runtime, caller.exam, caller.name)
    # Only while the exam runs for them: 403 `not_started`, `too_late`, `exam_over` (a
    # side device may be paired in the waiting room, but sends nothing before the start).
    exam = await runtime.exams.get(caller.exam)
    runtime.exams.check_schedule(exam, candidate, "publish")
    offer = await read_offer(request, runtime.settings, publish=True)
    if caller.role == "side":  # a refused offer binds nothing
        await runtime.media.pairing.bind(caller.token, request.headers.get(DEVICE_HEADER))
    tag = SessionTag(caller.exam, caller.room, caller.name, source)
    response = await _publish(request, runtime, caller.owner, tag, offer)
    if caller.role == "side":
        await runtime.media.pairing.pair(caller.token)
    return response


@router.patch("/sessions/{session_id}")
async def patch(
    session_id: str, request: Request, caller: MediaCallerDep, runtime: RuntimeDep
) -> Response:
    return await patch_session(request, runtime, caller, "whip", session_id)


@router.delete("/sessions/{session_id}")
async def delete(session_id: str, caller: MediaCallerDep, runtime: RuntimeDep) -> Response:
    return await end_session(runtime, caller, "whip", session_id)


async def _publish(
    request: Request,
    runtime: RuntimeDep,
    owner: str,
    tag: SessionTag,
    offer: str,
    *,
    ttl: int | None = None,
) -> Response:
    plane = runtime.media
    shard = await plane.router.shard_for(keys.room_key(tag.exam, tag.room))
    session = MediaSession(
        id=new_session_id(),
        kind="whip",
        owner=owner,
        exam=tag.exam,
        room=tag.room,
        cid=tag.cid,
        source=tag.source,
        shard=shard,
        etag=new_etag(),
    )
    answer = await plane.router.publish(
        shard,
        offer,
        tag,
        content_type=request.headers.get("content-type"),
        session_id=session.id,
    )
    replaced = await plane.sessions.save(session, ttl)
    previous = await plane.sessions.get(replaced) if replaced else None
    if previous is not None:
        await close_quietly(runtime, previous)
        await plane.sessions.remove(previous)
    return created(answer, session, SESSIONS, runtime.settings)
