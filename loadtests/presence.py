"""The simulated candidate's heartbeats: over the presence socket as the app sends
them (`/v1/me/presence`), or by `POST /v1/me/heartbeat` (`--heartbeats http`).

A beat's answer on the socket carries the room's `reconnect` (a media drain) when one
was journaled since the previous beat: handed to `on_reconnect`."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any, Literal

import aiohttp

Transport = Literal["socket", "http"]
TRANSPORTS: tuple[Transport, ...] = ("socket", "http")
PATH = "/v1/me/presence"
ANSWER_TIMEOUT_S = 60.0


def sockets_session(target: str) -> aiohttp.ClientSession:
    """Presence sockets stay open for the whole exam, each holding its connection: they
    get a session of their own, so that they never take the HTTP steps' pooled ones."""
    return aiohttp.ClientSession(
        target,
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
    )


class PresenceSocket:
    """One candidate's presence socket, opened at the first beat and again after the
    server closed it (a gateway restart): each beat is one message and its answer."""

    def __init__(self, sockets: aiohttp.ClientSession) -> None:
        self._sockets = sockets
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self.on_reconnect: Callable[[dict[str, Any]], None] | None = None

    async def beat(self, headers: dict[str, str]) -> tuple[bool, str]:
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                if self._ws is None or self._ws.closed:
                    self._ws = await self._sockets.ws_connect(
                        PATH, headers=headers, autoping=True, heartbeat=None
                    )
                beat_id = uuid.uuid4().hex
                await self._ws.send_str(json.dumps({"id": beat_id}))
                message = await self._ws.receive()
        except aiohttp.WSServerHandshakeError as refused:
            return False, f"{refused.status} handshake"
        except (TimeoutError, aiohttp.ClientError, ConnectionError):
            await self.close()
            return False, "presence_socket_failed"
        if message.type != aiohttp.WSMsgType.TEXT:
            await self.close()
            return False, f"closed {self._close_code(message)}"
        answer = json.loads(message.data)
        if "error" in answer:
            error = answer["error"]
            return False, f"{error.get('status')} {error.get('reason')}"
        if answer.get("id") != beat_id:
            return False, "presence_answer_mismatch"
        if "reconnect" in answer and self.on_reconnect is not None:
            self.on_reconnect(answer["reconnect"])
        return True, ""

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
            self._ws = None

    @staticmethod
    def _close_code(message: aiohttp.WSMessage) -> str:
        return str(message.data) if message.type == aiohttp.WSMsgType.CLOSE else message.type.name
