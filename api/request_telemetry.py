"""One SERVER span, one log line and one duration sample per request, from one ASGI middleware.

The OpenTelemetry ASGI/FastAPI instrumentation cost about 0.4 ms of gateway CPU
per request (it scans the route table to name each span and records the raw
path, query, client address and user agent, which `infra.telemetry` must then
scrub); this records only what the stable HTTP conventions need and nothing
personal: method, route template, status. The same three label the request's
duration in `http_server_request_duration_seconds` (`api.metrics.PodMetrics`, the
OpenTelemetry `http.server.request.duration` histogram), liveness probes included.
"""

from __future__ import annotations

import logging
import time

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.metrics import POD_METRICS, PodMetrics

request_log = logging.getLogger("examday.requests")
# Probed every few seconds by every load balancer and kubelet: a line each says nothing.
_PROBES = frozenset({"/healthz", "/readyz"})
# Liveness probes are not traced either; readiness is, since it calls into the actors.
_UNTRACED = frozenset({"/healthz"})
# The methods the HTTP conventions name; any other is `_OTHER` (bounded label values).
_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)


def method_label(method: str) -> str:
    return method if method in _METHODS else "_OTHER"


def route_of(scope: Scope) -> str | None:
    """The matched route's template (`/v1/exams/{exam_id}`), never the raw path."""
    return getattr(scope.get("route"), "path", None)


class RequestTelemetry:
    """Traces and logs each HTTP request, naming its route template, never its path.

    The span continues a W3C `traceparent` sent by the client; the log line is
    written inside the span, so it carries the trace id.
    """

    def __init__(
        self,
        app: ASGIApp,
        tracer_provider: trace.TracerProvider,
        metrics: PodMetrics = POD_METRICS,
    ) -> None:
        self.app = app
        self.tracer = tracer_provider.get_tracer("examday.gateway")
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] in _UNTRACED:
            await self._timed(scope, receive, send)
            return
        method: str = scope["method"]
        raw_headers = scope["headers"]
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in raw_headers}
        parent = propagate.extract(headers)
        span = self.tracer.start_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.scheme": scope.get("scheme", "http")},
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        started = time.perf_counter()
        status = 500  # an exception escaping the app is answered 500 by Starlette

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except BaseException as exc:
            span.record_exception(exc)
            raise
        finally:
            route = route_of(scope)
            elapsed = time.perf_counter() - started
            self.metrics.observe_request(method_label(method), route or "", status, elapsed)
            if route is not None:
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            if scope["path"] not in _PROBES and request_log.isEnabledFor(logging.INFO):
                request_log.info(
                    "request",
                    extra={
                        "method": method,
                        "route": route or "unmatched",
                        "status": status,
                        "duration_ms": round(1000 * elapsed, 2),
                    },
                )
            otel_context.detach(token)
            span.end()

    async def _timed(self, scope: Scope, receive: Receive, send: Send) -> None:
        """An untraced request: its duration only."""
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = time.perf_counter() - started
            method = method_label(scope["method"])
            self.metrics.observe_request(method, route_of(scope) or "", status, elapsed)
