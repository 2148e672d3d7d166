"""The candidate's presence socket: heartbeats over one WebSocket, `/v1/me/presence`.

A heartbeat by HTTP costs the gateway a whole request (parsing, the middleware,
a session lookup in Redis) to carry a few bytes; with 2,000 candidates beating
every 5 s that was most of the gateway's work in a login storm. Here the session
is checked when the socket opens and every `presence_recheck_seconds` after, and
each beat is one small message, group-committed to the room's shard with the HTTP
beats (`RoomRouter.heartbeat`) and journaled the same way.

    client → {"id": "<optional idempotency key>", "network": "wifi"}
    server → {"id": ..., "event_id": ..., "state": "joined"[, "reconnect": {...}]}
           | {"id": ..., "error": <problem details, as an HTTP error would be>}

`reconnect` ({"id", "plane", "reason", "retry_after"}, as `GET /v1/me/room` shows it) is
in a beat's answer when the room's journal got a `reconnect` for the whole room or for
this candidate since the previous beat (since the socket's first beat, for the first): a
media drain (`cluster.drain`) asks every client of the room to publish again at once. A
beat's answer carries it rather than a message of its own so that clients stay simple
(one message, one answer) and the gateway needs no reader per room: the room shard
answers each beat with the last `reconnect` meant for the candidate, and the socket
tells it when it is not the one it saw before. (Each beat used to read the room's
evidence stream since the previous one: in a login storm, dozens of joins per beat,
parsed by the gateway for every beat.)

A refused handshake is answered as any refused request: a 4xx problem. The server
closes with 4401 when the session ends (logout, a newer login, the exam ended for
this candidate), 4408 after `2 x heartbeat_timeout_seconds` without a message,
1008 after too many bad messages, 1012 when the gateway restarts: clients open a
new socket (after logging in again for 4401), or fall back to
`POST /v1/me/heartbeat`. Cookies are `SameSite=Strict`, so another site's page
cannot open this socket with a candidate's cookie; a handshake carrying the cookie
must also come from one of `public_origins` (`Origin`, checked in `api.security`),
since a sibling subdomain or another port is the same site.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import Field, ValidationError

from api.deps import RuntimeDep
from api.exam_end import end_if_over
from api.models import NetworkType, Strict
from api.problems import REDIS_DOWN, error_body, error_response, hot_state_down
from api.runtime import Runtime
from api.security import Principal, current_candidate, current_principal, request_token
from core import keys
from infra.errors import (
    ExamdayError,
    Forbidden,
    InvalidInput,
    PayloadTooLarge,
    RateLimited,
    Unauthenticated,
)

router = APIRouter(prefix="/v1/me", tags=["candidate"])

PATH = "/v1/me/presence"
MAX_MESSAGE_BYTES = 512
MAX_BAD_MESSAGES = 10  # then the socket is closed: a client that broken should start over
CLOSE_SESSION_ENDED = 4401
CLOSE_IDLE = 4408
CLOSE_POLICY = 1008


class BeatIn(Strict):
    id: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[\w.-]+$")
    network: NetworkType | None = None


@router.websocket("/presence")
async def presence(websocket: WebSocket, runtime: RuntimeDep) -> None:
    try:
        principal = await _joined_candidate(websocket, runtime)
    except ExamdayError as error:
        await websocket.send_denial_response(error_response(error, PATH))
        return
    await websocket.accept()
    await _Channel(websocket, runtime, principal).serve()


async def _joined_candidate(websocket: WebSocket, runtime: Runtime) -> Principal:
    try:
        principal = await current_candidate(await current_principal(websocket, runtime))
    except REDIS_DOWN:
        raise hot_state_down() from None
    if principal.room is None:
        raise InvalidInput("join the room first", reason="not_joined")
    return principal


class _Channel:
    def __init__(self, websocket: WebSocket, runtime: Runtime, principal: Principal) -> None:
        assert principal.claims.exam is not None
        assert principal.room is not None
        self.websocket = websocket
        self.runtime = runtime
        self.principal = principal
        self.room_key = keys.room_key(principal.claims.exam, principal.room)
        # The id of the last `reconnect` the shard answered with ("" for none); None before
        # the first beat, whose answer only sets it (what came before the socket is not news).
        self.reconnect_seen: str | None = None
        self.checked_at = time.monotonic()
        self.last_beat = float("-inf")
        self.bad = 0

    async def serve(self) -> None:
        idle = 2 * self.runtime.settings.heartbeat_timeout_seconds
        try:
            while self.bad < MAX_BAD_MESSAGES:
                text = await self._receive(idle)
                if text is None:
                    return
                ended = await self._ended()
                if ended is not None:
                    await self.websocket.close(CLOSE_SESSION_ENDED, ended)
                    return
                await self.websocket.send_text(json.dumps(await self._answer(text)))
            await self.websocket.close(CLOSE_POLICY, "too_many_bad_messages")
        except WebSocketDisconnect:
            return

    async def _receive(self, idle: float) -> str | None:
        """The next message's text ("" for a binary frame, refused as any bad message);
        None once the client has gone or been idle too long."""
        try:
            async with asyncio.timeout(idle):
                message = await self.websocket.receive()
        except TimeoutError:
            await self.websocket.close(CLOSE_IDLE, "idle")
            return None
        if message["type"] == "websocket.disconnect":
            return None
        return str(message.get("text") or "")

    async def _ended(self) -> str | None:
        """Why the socket must close (`session_ended`, `exam_over`), asked of Redis once a
        recheck is due; None while the session lives and the exam goes on. A candidate
        who beats only here is ended at their end as an HTTP beat would be (media too)."""
        if time.monotonic() - self.checked_at < self.runtime.settings.presence_recheck_seconds:
            return None
        try:
            await self.runtime.sessions.resolve(request_token(self.websocket))
            await end_if_over(self.runtime, self.principal, self.room_key)
        except Unauthenticated:
            return "session_ended"
        except Forbidden as over:
            return over.reason
        except REDIS_DOWN:
            # Redis too slow to say: keep the candidate, and ask again at the next beat.
            return None
        self.checked_at = time.monotonic()
        return None

    async def _answer(self, text: str) -> dict[str, Any]:
        beat_id: str | None = None
        try:
            beat = self._parse(text)
            beat_id = beat.id
            now = time.monotonic()
            if now - self.last_beat < self.runtime.settings.presence_min_interval_seconds:
                raise RateLimited("heartbeats too close together", reason="too_many_heartbeats")
            self.last_beat = now
            result = await self.runtime.rooms.heartbeat(
                self.room_key, self.principal.name, beat.network, beat.id or uuid.uuid4().hex
            )
        except REDIS_DOWN:
            return self._refused(beat_id, hot_state_down())
        except ExamdayError as error:
            return self._refused(beat_id, error)
        answer = {"id": beat_id, "event_id": result["event_id"], "state": result.get("state")}
        reconnect = self._news(result.get("reconnect"))
        if reconnect is not None:
            answer["reconnect"] = reconnect
        return answer

    def _news(self, reconnect: dict[str, Any] | None) -> dict[str, Any] | None:
        """The shard's last `reconnect` for this candidate, when this socket has not seen
        it before (nor, at the first beat, at all)."""
        seen, self.reconnect_seen = self.reconnect_seen, reconnect["id"] if reconnect else ""
        if seen is None or reconnect is None or reconnect["id"] == seen:
            return None
        return reconnect

    def _refused(self, beat_id: str | None, error: ExamdayError) -> dict[str, Any]:
        if error.status < 500:
            self.bad += 1
        return {"id": beat_id, "error": error_body(error, PATH)}

    def _parse(self, text: str) -> BeatIn:
        if len(text.encode()) > MAX_MESSAGE_BYTES:
            raise PayloadTooLarge(
                f"a heartbeat is at most {MAX_MESSAGE_BYTES} bytes", reason="message_too_large"
            )
        try:
            return BeatIn.model_validate_json(text)
        except ValidationError as error:
            raise InvalidInput(
                "a heartbeat is a JSON object with optional 'id' and 'network'",
                reason="invalid_heartbeat",
                errors=[e["msg"] for e in error.errors()[:5]],
            ) from None
