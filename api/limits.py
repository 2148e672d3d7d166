"""Limits enforced before a route runs: the size of a request's body, and how many
requests one gateway process works on at once.

Why a bound on requests at work: a saturated process takes in every waiting
connection at each wakeup (`api.event_loop`), so without a bound a surge lands inside
it, where each request holds memory and, later, one of the Redis pool's 512
connections (past those, requests waited 5 s and failed 503 `hot_state_down` after
their work was done). Refused at the door, a request costs microseconds and nothing
has run, so its client may send it again as it was, POST included, after Retry-After
(`web/common/http.js` and the load tester do, backing off).

Why the bound is high (`EXAMDAY_GATEWAY_MAX_WAITING_REQUESTS`, 1024): refusing does not
make a saturated machine faster. In the combined rehearsal a worker held at most about
520; bounded at 256 or 512, the departure wave's refused requests came back later than
they would have been served in turn, and its p99 doubled (docs/capacity.md, History
2026-12-07 morning). The bound stops a pile-up, not a queue.

Why staff have places of their own (`EXAMDAY_GATEWAY_STAFF_RESERVED_REQUESTS`): when
candidates' requests are refused, the proctors watching them and the organiser running
the day must still be answered, or nobody can act on what the surge does. A request
over the bound is let in if it carries a valid staff token (its signature and expiry,
checked in microseconds, and only then: below the bound nothing is read); the route
checks it fully, revocation included, as for any request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.metrics import POD_METRICS, PodMetrics
from api.problems import problem_response
from api.security import presented_token
from infra.errors import Unauthenticated
from infra.tokens import STAFF_ROLES, verify

BUSY = "gateway_busy"
BUSY_RETRY_AFTER_S = 1
# Who a full worker refused (the `caller` label of `gateway_requests_refused_total`).
Caller = Literal["staff", "others"]
CALLERS: tuple[Caller, ...] = ("staff", "others")
# Probes and scrapes are answered whatever the load: a busy gateway is not a dead one,
# and its metrics are what shows it is busy.
ALWAYS_ADMITTED = frozenset({"/healthz", "/readyz", "/metrics", "/metrics/cluster"})

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


class AdmissionMiddleware:
    """Answers 503 `gateway_busy` with Retry-After, before anything runs, while `limit`
    admitted requests of this process have no answer yet; staff's requests, while
    `limit + staff_reserve` have none.

    A request counts from its arrival to the start of its answer, so long streams
    (server-sent events) count only until their headers go out. Its body, if any, is
    read and dropped first, within the body limits (this middleware sits inside
    `BodyLimitMiddleware`), so that the connection stays usable for the retry."""

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        staff_reserve: int,
        token_key: bytes,
        metrics: PodMetrics = POD_METRICS,
    ) -> None:
        self.app = app
        self.limit = limit
        self.staff_reserve = staff_reserve
        self.token_key = token_key
        self.metrics = metrics
        self.waiting = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in ALWAYS_ADMITTED:
            await self.app(scope, receive, send)
            return
        if self.waiting >= self.limit:
            caller = self._caller(scope)
            if caller != "staff" or self.waiting >= self.limit + self.staff_reserve:
                self.metrics.refused.labels(caller).inc()
                await _drain(receive)
                await _busy(scope["path"])(scope, receive, send)
                return
        self._admit(+1)
        answered = False

        async def answering_send(message: Message) -> None:
            nonlocal answered
            if not answered and message["type"] == "http.response.start":
                answered = True
                self._admit(-1)
            await send(message)

        try:
            await self.app(scope, receive, answering_send)
        finally:
            if not answered:
                self._admit(-1)

    def _caller(self, scope: Scope) -> Caller:
        """`staff` for a request with a valid staff token (not checked for revocation:
        the route does that), `others` for anyone else."""
        token, _ = presented_token(HTTPConnection(scope))
        if token is None:
            return "others"
        try:
            role = verify(token, self.token_key).role
        except Unauthenticated:
            return "others"
        return "staff" if role in STAFF_ROLES else "others"

    def _admit(self, change: int) -> None:
        # The gauge is set, not read from this count at scrape time: a process may hold
        # more than one gateway app (the tests' second gateway), each its own count.
        self.waiting += change
        self.metrics.waiting.set(self.waiting)


def _busy(path: str) -> JSONResponse:
    return problem_response(
        503, BUSY, "The gateway is busy",
        "this gateway process has as many requests at work as it takes; nothing was done:"
        " send the same request again after Retry-After",
        path, retry_after=BUSY_RETRY_AFTER_S,
    )  # fmt: skip


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
