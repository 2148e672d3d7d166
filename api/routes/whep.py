"""WHEP egress (draft-ietf-wish-whep): proctors watch candidates; candidates hear talk-back.

POST an SDP offer with recvonly m-lines and get 201 with the answer,
`Location`, `ETag` and ICE-server `Link`s; PATCH/DELETE the session URL as
with WHIP. A proctor watches one candidate's `camera` by default and asks
for more with `?sources=camera,screen,side` (m-lines are filled in that
order, an unfilled one is answered inactive). When what is watched ends (the
candidate stopped, re-published, or their media shard died) the viewer's
tracks end: POST the offer again to watch the new session.

    POST /v1/whep/exams/{exam}/rooms/{room}/candidates/{cid}[?sources=...]   proctor
    POST /v1/whep/me/talkback                                                candidate
    PATCH, DELETE /v1/whep/sessions/{id}

A candidate holds at most `talkback_listeners_per_candidate` talk-back listeners at
once (429 `too_many_listeners` beyond). Each session a staff member watches with is
remembered under their login session, and ends on its shard when they log out.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from fastapi import APIRouter, Query, Request, Response

from actors.media.sessions import (
    MediaSession,
    new_etag,
    new_session_id,
)
from actors.media.tag import CANDIDATE_SOURCES
from api.deps import RuntimeDep
from api.media_http import (
    MediaCallerDep,
    close_quietly,
    created,
    end_session,
    linked_options,
    options,
    patch_session,
    read_offer,
)
from api.security import CandidateDep, StaffDep, check_candidate_in_room, check_room
from core import keys
from core.exam import Identifier
from infra.errors import InvalidInput, NotFound, RateLimited, Unauthenticated
from infra.redis import text

router = APIRouter(prefix="/v1/whep", tags=["media"])
SESSIONS = "/v1/whep/sessions"
# A subscribe on a shard answers well within this (the actor call's own timeout is less).
_RESERVING_SECONDS = 60.0


def parse_sources(value: str) -> list[str]:
    sources = [s.strip() for s in value.split(",")]
    if (
        not sources
        or len(set(sources)) != len(sources)
        or any(s not in CANDIDATE_SOURCES for s in sources)
    ):
        raise InvalidInput(
            f"sources is a comma-separated list of {', '.join(CANDIDATE_SOURCES)}",
            reason="bad_sources",
        )
    return sources


@router.options("/exams/{exam_id}/rooms/{room_id}/candidates/{candidate_id}")
@router.options("/me/talkback")
async def endpoint_options(request: Request, runtime: RuntimeDep) -> Response:
    return await linked_options(request, runtime)


@router.options("/sessions/{session_id}")
async def session_options() -> Response:
    return options(post=False)


@router.post("/exams/{exam_id}/rooms/{room_id}/candidates/{candidate_id}", status_code=201)
async def watch(
    exam_id: Identifier,
    room_id: Identifier,
    candidate_id: Identifier,
    request: Request,
    staff: StaffDep,
    runtime: RuntimeDep,
    sources: str = Query(default="camera", max_length=64),
) -> Response:
    await check_room(runtime, staff, exam_id, room_id)
    await check_candidate_in_room(runtime, exam_id, room_id, candidate_id)
    wanted = parse_sources(sources)
    offer = await read_offer(request, runtime.settings, publish=False)
    pointers = [keys.media_publisher_key(exam_id, candidate_id, source) for source in wanted]
    viewer = MediaSession(
        new_session_id(), "whep", f"staff:{staff.name}", exam_id, room_id, candidate_id,
        ",".join(wanted), "", new_etag(),
    )  # fmt: skip
    # Remembered before the session exists, so that a logout meanwhile cannot miss it.
    key = keys.session_whep_key(staff.claims.sid)
    async with runtime.redis.pipeline(transaction=True) as pipe:
        pipe.sadd(key, viewer.id)
        pipe.expire(key, runtime.settings.session_ttl_seconds)
        await pipe.execute()
    answer = await _subscribe(request, runtime, viewer, pointers, offer)
    if not await runtime.redis.exists(keys.session_key(staff.claims.sid)):
        # Logged out while this watch was set up, after the logout read the set above.
        session = await runtime.media.sessions.get(viewer.id)
        if session is not None:
            await close_quietly(runtime, session)
            await runtime.media.sessions.remove(session)
        raise Unauthenticated("the session has ended", reason="session_ended")
    return answer


async def _reserve_listener(runtime: RuntimeDep, exam_id: str, cid: str, session_id: str) -> str:
    """Take a talk-back listener place of `cid` for `session_id`; 429 when all are taken.

    Places of sessions that ended (DELETE, expiry) are given back first; a place taken
    less than `_RESERVING_SECONDS` ago is kept even without its session, which is
    still being set up. The place is added and counted in one transaction: concurrent
    requests may both be refused at the edge, never both let past it.
    """
    key = keys.talkback_listeners_key(exam_id, cid)
    cap = runtime.settings.talkback_listeners_per_candidate
    now = time.time()
    held: Any = await runtime.redis.zrangebyscore(key, "-inf", now - _RESERVING_SECONDS)
    gone = [m for m in map(text, held) if await runtime.media.sessions.get(m) is None]
    if gone:
        await runtime.redis.zrem(key, *gone)
    async with runtime.redis.pipeline(transaction=True) as pipe:
        pipe.zadd(key, {session_id: now})
        pipe.zcard(key)
        pipe.expire(key, runtime.settings.session_ttl_seconds)
        _, count, _ = await pipe.execute()
    if int(count) > cap:
        await runtime.redis.zrem(key, session_id)
        raise RateLimited(
            f"at most {cap} talk-back listeners at once; end one first",
            reason="too_many_listeners",
            retry_after=1,
        )
    return key


@router.post("/me/talkback", status_code=201)
async def hear_talkback(request: Request, candidate: CandidateDep, runtime: RuntimeDep) -> Response:
    """The talk-back addressed to this candidate, then the one to the whole room."""
    exam_id, room_id = candidate.claims.exam, candidate.room
    assert exam_id is not None
    assert room_id is not None
    offer = await read_offer(request, runtime.settings, publish=False)
    pointers = [
        keys.media_talkback_key(exam_id, room_id, candidate.name),
        keys.media_talkback_key(exam_id, room_id, None),
    ]
    listener = MediaSession(
        new_session_id(), "whep", f"candidate:{exam_id}:{candidate.name}", exam_id, room_id,
        candidate.name, "talkback", "", new_etag(),
    )  # fmt: skip
    places = await _reserve_listener(runtime, exam_id, candidate.name, listener.id)
    try:
        return await _subscribe(request, runtime, listener, pointers, offer)
    except BaseException:
        await runtime.redis.zrem(places, listener.id)
        raise


@router.patch("/sessions/{session_id}")
async def patch(
    session_id: str, request: Request, caller: MediaCallerDep, runtime: RuntimeDep
) -> Response:
    return await patch_session(request, runtime, caller, "whep", session_id)


@router.delete("/sessions/{session_id}")
async def delete(session_id: str, caller: MediaCallerDep, runtime: RuntimeDep) -> Response:
    ended = await end_session(runtime, caller, "whep", session_id)
    if caller.role == "candidate" and caller.exam is not None:
        # Its talk-back place, if it was a listener, is free again at once.
        await runtime.redis.zrem(keys.talkback_listeners_key(caller.exam, caller.name), session_id)
    return ended


async def _subscribe(
    request: Request, runtime: RuntimeDep, viewer: MediaSession, pointers: list[str], offer: str
) -> Response:
    """Watch the publishers the `pointers` name, on the shard of the first one found."""
    plane = runtime.media
    found = [s for s in [await plane.sessions.current(p) for p in pointers] if s is not None]
    if not found:
        raise NotFound("nothing is published to watch here", reason="not_publishing")
    shard = found[0].shard
    session = dataclasses.replace(viewer, shard=shard)
    answer = await plane.router.subscribe(
        shard,
        offer,
        [s.id for s in found if s.shard == shard],
        content_type=request.headers.get("content-type"),
        session_id=session.id,
    )
    await plane.sessions.save(session)
    return created(answer, session, SESSIONS, runtime.settings)
