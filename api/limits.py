"""Request-size limits enforced before a route reads the body."""

from __future__ import annotations

import re
from collections.abc import Mapping

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import problem_response

# A declared body up to this many times the limit is read and discarded before
# the 413, so that ordinary clients (which send the whole body before reading)
# see the answer instead of a reset connection; anything larger is cut off.
_DRAIN_FACTOR = 4


class BodyLimitMiddleware:
    """Refuses bodies over their path's limit: by Content-Length first, else while streaming."""

    def __init__(
        self, app: ASGIApp, default: int, overrides: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.default = default
        # Path patterns (regular expressions matched against the whole path), first match wins.
        self.overrides = [
            (re.compile(pattern), limit) for pattern, limit in (overrides or {}).items()
        ]
        self._under_every_limit = min([default, *(limit for _, limit in self.overrides)])

    def limit_for(self, path: str) -> int:
        return next((limit for rx, limit in self.overrides if rx.fullmatch(path)), self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) <= self._under_every_limit:
            # The HTTP server delivers no more than a declared length: nothing to count.
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            drained = declared.isdigit() and int(declared) <= limit * _DRAIN_FACTOR
            if drained:
                await _drain(receive)
            await _too_large(limit, scope["path"], close=not drained)(scope, receive, send)
            return
        received = 0
        refused = False

        async def guarded_send(message: Message) -> None:
            # Once the 413 is out, whatever the app answers is dropped.
            if not refused:
                await send(message)

        async def counting_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    await _too_large(limit, scope["path"], close=True)(scope, receive, send)
                    refused = True
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, counting_receive, guarded_send)


async def _drain(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


def _too_large(limit: int, path: str, *, close: bool) -> JSONResponse:
    # When the rest of the body is not read, the connection cannot be reused.
    return problem_response(
        413, "payload_too_large", "Payload too large",
        f"the body is over the limit of {limit} bytes", path, extra={"limit": limit},
        headers={"Connection": "close"} if close else None,
    )  # fmt: skip
