"""Request-size limits enforced before a route reads the body."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import problem_response


class BodyLimitMiddleware:
    """Refuses bodies over their path's limit: by Content-Length first, else while streaming."""

    def __init__(
        self, app: ASGIApp, default: int, overrides: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.default = default
        # Longest prefix wins.
        self.overrides = sorted((overrides or {}).items(), key=lambda item: -len(item[0]))

    def limit_for(self, path: str) -> int:
        return next(
            (limit for prefix, limit in self.overrides if path.startswith(prefix)), self.default
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _too_large(limit, scope["path"])(scope, receive, send)
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
                    await _too_large(limit, scope["path"])(scope, receive, send)
                    refused = True
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, counting_receive, guarded_send)


def _too_large(limit: int, path: str) -> JSONResponse:
    # The rest of the body is never read, so the connection cannot be reused.
    return problem_response(
        413, "payload_too_large", "Payload too large",
        f"the body is over the limit of {limit} bytes", path, extra={"limit": limit},
        headers={"Connection": "close"},
    )  # fmt: skip
