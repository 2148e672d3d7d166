"""What WHIP (RFC 9725) and WHEP resources share: callers, SDP bodies, ETags, CORS, sessions.

Every session URL checks its caller (the owner key of `MediaCaller`), an
ETag guards trickle PATCHes (If-Match: missing 428, stale 412), and every
answer carries the CORS headers a browser needs to read Location, ETag and
Link. Offers are checked here with the forwarder's own parser before any
shard is chosen, so a refused offer allocates and stores nothing.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Response

from actors.media import sdp, trickle
from actors.media.pairing import DEVICE_HEADER
from actors.media.sessions import Kind, MediaSession
from api.deps import RuntimeDep
from api.security import request_token, require_consent
from core import keys
from core.exams import Candidate
from infra import turn
from infra.errors import (
    ExamdayError,
    NotFound,
    PreconditionFailed,
    PreconditionRequired,
)
from infra.pseudonym import Pseudonyms
from infra.redis import text
from infra.settings import Settings

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, PATCH, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": f"Authorization, Content-Type, If-Match, {DEVICE_HEADER}",
    "Access-Control-Expose-Headers": "Location, ETag, Link, Accept-Patch, Retry-After",
    "Access-Control-Max-Age": "600",
}


@dataclass(frozen=True, slots=True)
class MediaCaller:
    """Who calls a media route: a candidate, a candidate's side device, or staff."""

    role: str  # candidate, side, proctor, organiser
    name: str  # candidate id, or staff username
    exam: str | None
    room: str | None
    token: str

    @property
    def owner(self) -> str:
        if self.role in ("candidate", "side"):
            return f"{self.role}:{self.exam}:{self.name}"
        return f"staff:{self.name}"


async def media_caller(request: Request, runtime: RuntimeDep) -> MediaCaller:
    token = request_token(request)
    if "." not in token:  # session tokens are signed (payload.mac); pairing tokens are not
        device = await runtime.media.pairing.resolve(token, request.headers.get(DEVICE_HEADER))
        return MediaCaller("side", device.cid, device.exam, device.room, token)
    claims, record = await runtime.sessions.resolve(token)
    return MediaCaller(claims.role, claims.sub, claims.exam, record.get("room"), token)


MediaCallerDep = Annotated[MediaCaller, Depends(media_caller)]


async def may_publish(runtime: RuntimeDep, exam_id: str, cid: str) -> Candidate:
    """A candidate sends audio and video only with the current consent (and a guardian's)."""
    candidate = await runtime.exams.candidate(exam_id, cid)
    if candidate is None:
        raise NotFound("no such candidate", reason="candidate_not_found")
    exam = await runtime.exams.get(exam_id)
    require_consent(candidate, exam)
    return candidate


async def read_offer(request: Request, settings: Settings, *, publish: bool) -> str:
    """The SDP offer of a WHIP/WHEP POST, refused (415/400/413/422) before any shard sees it."""
    sdp.check_content_type(request.headers.get("content-type"), sdp.SDP_TYPE)
    body = await read_text(request)
    offer = sdp.parse_offer(
        body,
        max_bytes=settings.media.max_sdp_bytes,
        max_candidates=settings.media.max_offer_candidates,
    )
    if publish:
        sdp.check_publish(offer)
    else:
        sdp.check_subscribe(offer, max_tracks=settings.media.max_subscribe_tracks)
    return body


async def read_text(request: Request) -> str:
    try:
        return (await request.body()).decode("utf-8")
    except UnicodeDecodeError:
        raise sdp.malformed("the body is not UTF-8") from None


def check_if_match(request: Request, etag: str) -> None:
    header = request.headers.get("if-match")
    if header is None:
        raise PreconditionRequired("PATCH needs If-Match with the ETag", reason="if_match_required")
    offered = [value.strip().removeprefix("W/") for value in header.split(",")]
    if "*" not in offered and etag not in offered:
        raise PreconditionFailed("the ETag does not match this session", reason="stale_etag")


def ice_server_links(settings: Settings, owner: str) -> str | None:
    """The `Link` header naming the ICE servers (RFC 9725 section 4.6): the configured
    STUN/TURN URLs, then the TURN servers with a credential minted for `owner`.

    The TURN username carries a pseudonym of the owner, never the owner: TURN servers
    log usernames, and a candidate id must not reach their logs.
    """
    links = [f'<{url}>; rel="ice-server"' for url in settings.media.ice_servers]
    subject = Pseudonyms(settings.pseudonym_key).of("turn", owner)
    for server in turn.ice_servers(settings.turn, subject):
        links.append(
            f'<{server.url}>; rel="ice-server"; username="{server.username}";'
            f' credential="{server.credential}"; credential-type="password"'
        )
    return ", ".join(links) or None


def created(answer: str, session: MediaSession, base: str, settings: Settings) -> Response:
    """201 with the SDP answer, the session URL, its ETag and the ICE servers (RFC 9725 4.2)."""
    headers = {**CORS_HEADERS, "Location": f"{base}/{session.id}", "ETag": session.etag}
    links = ice_server_links(settings, session.owner)
    if links:
        headers["Link"] = links
    return Response(answer, status_code=201, media_type=sdp.SDP_TYPE, headers=headers)


async def linked_options(request: Request, runtime: RuntimeDep) -> Response:
    """OPTIONS on a WHIP/WHEP endpoint: to a logged-in caller, the ICE servers too.

    The 201's `Link`s come after the offer, too late for its candidates: a candidate
    whose network blocks UDP would offer no relay candidate and never connect. So a
    client asks first (as RFC 9725's drafts let OPTIONS do) and gathers with the relays
    from the start. A CORS preflight carries no credential and gets no `Link`.
    """
    response = options(post=True)
    try:
        caller = await media_caller(request, runtime)
    except ExamdayError:
        return response
    links = ice_server_links(runtime.settings, caller.owner)
    if links:
        response.headers["Link"] = links
    return response


def options(*, post: bool) -> Response:
    """A CORS preflight answer; POST endpoints say what they accept (Accept-Post)."""
    headers = dict(CORS_HEADERS)
    if post:
        headers.update({"Accept-Post": sdp.SDP_TYPE, "Allow": "POST, OPTIONS"})
    else:
        headers.update({"Accept-Patch": trickle.TRICKLE_TYPE, "Allow": "PATCH, DELETE, OPTIONS"})
    return Response(status_code=204, headers=headers)


async def patch_session(
    request: Request, runtime: RuntimeDep, caller: MediaCaller, kind: Kind, session_id: str
) -> Response:
    """Trickle ICE into a session: 204. An ICE restart (RFC 9725 section 4.3.2: a fragment
    with new a=ice-ufrag and a=ice-pwd) gets 200 with the server's fragment, its new
    credentials and candidates, and a new ETag; bad credentials are refused (400
    `bad_ice_credentials`) by the forwarder.

    Fragments are refused (415/400/413) here before any shard sees them.
    """
    session = await runtime.media.sessions.owned(session_id, kind, caller.owner)
    check_if_match(request, session.etag)
    content_type = request.headers.get("content-type")
    sdp.check_content_type(content_type, trickle.TRICKLE_TYPE)
    fragment = await read_text(request)
    trickle.parse_fragment(
        fragment,
        max_bytes=runtime.settings.media.max_sdp_bytes,
        max_candidates=runtime.settings.media.max_patch_candidates,
    )
    answer = await runtime.media.router.patch(
        session.shard, session.id, fragment, content_type=content_type
    )
    if answer is None:
        return Response(status_code=204, headers={**CORS_HEADERS, "ETag": session.etag})
    session = await runtime.media.sessions.retag(session)
    return Response(
        answer,
        status_code=200,
        media_type=trickle.TRICKLE_TYPE,
        headers={**CORS_HEADERS, "ETag": session.etag},
    )


async def end_session(
    runtime: RuntimeDep, caller: MediaCaller, kind: Kind, session_id: str
) -> Response:
    session = await runtime.media.sessions.owned(session_id, kind, caller.owner)
    await close_quietly(runtime, session)
    await runtime.media.sessions.remove(session)
    return Response(status_code=200, headers=CORS_HEADERS)


async def end_staff_sessions(runtime: RuntimeDep, sid: str, owner: str) -> None:
    """End on their shards the WHEP sessions a staff login session opened (at logout)."""
    key = keys.session_whep_key(sid)
    async with runtime.redis.pipeline(transaction=True) as pipe:
        pipe.smembers(key)
        pipe.delete(key)
        opened, _ = await pipe.execute()
    for session_id in sorted(text(m) for m in opened):
        session = await runtime.media.sessions.get(session_id)
        # Only the viewer sessions this login owns (ids are also remembered before the
        # session exists, and a session record may have expired since).
        if session is not None and session.kind == "whep" and session.owner == owner:
            await close_quietly(runtime, session)
            await runtime.media.sessions.remove(session)


# Every source a candidate (or their side device) may publish; more than what is recorded.
PUBLISHED_SOURCES = ("camera", "screen", "side", "probe")


async def end_candidate_sessions(runtime: RuntimeDep, exam_id: str, cid: str) -> int:
    """End on their shards every session of a candidate a proctor ended: what they publish
    (camera, screen, the side device's) and their talk-back listeners. Ending the login
    alone would leave the media running until the peer went away by itself."""
    sessions = runtime.media.sessions
    found = [
        await sessions.current(keys.media_publisher_key(exam_id, cid, source))
        for source in PUBLISHED_SOURCES
    ]
    listeners_key = keys.talkback_listeners_key(exam_id, cid)
    listening: Any = await runtime.redis.zrange(listeners_key, 0, -1)
    found += [await sessions.get(text(m)) for m in listening]
    ended = 0
    for session in found:
        if session is not None and session.exam == exam_id and session.cid == cid:
            await close_quietly(runtime, session)
            await sessions.remove(session)
            ended += 1
    await runtime.redis.delete(listeners_key)
    return ended


async def close_quietly(runtime: RuntimeDep, session: MediaSession) -> None:
    """Close a session on its shard; one the shard lost already (a restart) is closed enough."""
    with contextlib.suppress(ExamdayError):
        await runtime.media.router.close_session(session.shard, session.id)
