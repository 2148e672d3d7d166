"""Tracing: one provider per process, and trace context carried into Ray actor calls.

Every call from the gateway (or one actor) into an actor goes through
`actor_call`, which opens a CLIENT span and passes the W3C trace context as the
`_trace` keyword; actor methods wrapped in `@traced` open the SERVER child span
on the other side. Span attributes never carry personal data: ids only, never
exam numbers, candidate numbers, names or tokens; and every exporter sits behind
`ScrubbingExporter`, which drops what HTTP instrumentation records about the
client (raw path and query, address, user agent).
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from contextvars import Token
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from infra.json_logs import configure_logging
from infra.settings import Settings

TRACER_NAME = "examday"
P = ParamSpec("P")
R = TypeVar("R")

_setup_lock = threading.Lock()


class JsonLinesSpanExporter(SpanExporter):
    """Appends finished spans to a file, one JSON object a line (debugging and tests)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = [json.dumps(_span_record(span)) + "\n" for span in spans]
        with self._lock, self._path.open("a") as out:
            out.writelines(lines)
        return SpanExportResult.SUCCESS


# What the HTTP instrumentation records that names a person or their device: the raw
# path and query hold exam and candidate ids (`http.route` keeps the template, which
# becomes `url.path`), the client's address, port and user agent identify them.
_PERSONAL = frozenset(
    {
        "url.path",
        "url.query",
        "url.full",
        "client.address",
        "client.port",
        "user_agent.original",
        "network.peer.address",
        "network.peer.port",
        # The old HTTP conventions, should an instrumentation still emit them.
        "http.target",
        "http.url",
        "http.client_ip",
        "http.user_agent",
        "net.peer.ip",
        "net.peer.port",
        "net.sock.peer.addr",
        "net.sock.peer.port",
    }
)


def scrubbed(span: ReadableSpan) -> ReadableSpan:
    """The span without the attributes in `_PERSONAL` (url.path becomes the route)."""
    attributes = dict(span.attributes or {})
    if _PERSONAL.isdisjoint(attributes):
        return span
    route = attributes.get("http.route")
    kept: dict[str, Any] = {k: v for k, v in attributes.items() if k not in _PERSONAL}
    if "url.path" in attributes and route is not None:
        kept["url.path"] = route
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=kept,
        events=span.events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class ScrubbingExporter(SpanExporter):
    """Every exporter of ours sits behind this: no span leaves the process with
    personal data, whatever an instrumentation library records."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._inner.export([scrubbed(span) for span in spans])

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


def _span_record(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.get_span_context()
    assert ctx is not None
    return {
        "name": span.name,
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_span_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "kind": span.kind.name,
        "service": span.resource.attributes.get("service.name"),
        "attributes": dict(span.attributes or {}),
        "pid": os.getpid(),
    }


def service_name(settings: Settings, component: str) -> str:
    """This process's default `service.name`: one per component (`examday-gateway`,
    `examday-room-shard`, ...), prefixed by `EXAMDAY_SERVICE_NAME` (default `examday`)."""
    return f"{settings.service_name}-{component.replace('_', '-')}"


def process_resource(
    settings: Settings, component: str, environ: Mapping[str, str] | None = None
) -> Resource:
    """The OpenTelemetry resource of this process.

    The standard variables win: `OTEL_SERVICE_NAME`, or a `service.name` in
    `OTEL_RESOURCE_ATTRIBUTES`, names the service as the OpenTelemetry SDK reads them
    (from this process's own environment: a Ray worker's, not the gateway's). Without
    them each component is its own service (`service_name`), all in the service
    namespace `EXAMDAY_SERVICE_NAME`.
    """
    env = os.environ if environ is None else environ
    given = {
        part.split("=", 1)[0].strip() for part in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(",")
    }
    if env.get("OTEL_SERVICE_NAME"):
        given.add("service.name")
    ours = {
        "service.name": service_name(settings, component),
        "service.namespace": settings.service_name,
        "examday.component": component,
    }
    return Resource.create({k: v for k, v in ours.items() if k not in given})


def setup_tracing(settings: Settings, component: str) -> TracerProvider:
    """Install this process's tracer provider once; later calls return the same one.

    Also the process's log lines (`infra.json_logs.configure_logging`): the gateway
    and every actor call this at start, so logs and traces are set up together.
    """
    configure_logging(settings, component)
    with _setup_lock:
        current = trace.get_tracer_provider()
        if isinstance(current, TracerProvider):
            return current
        provider = TracerProvider(resource=process_resource(settings, component))
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(ScrubbingExporter(OTLPSpanExporter())))
        if settings.trace_file is not None:
            # Synchronous so that a span is on disk when the call that made it returns.
            provider.add_span_processor(
                SimpleSpanProcessor(ScrubbingExporter(JsonLinesSpanExporter(settings.trace_file)))
            )
        trace.set_tracer_provider(provider)
        return provider


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def actor_call(method: Any, *args: Any, **kwargs: Any) -> Any:
    """`method.remote(*args, **kwargs)` with a CLIENT span and the trace context attached.

    Returns the ObjectRef; await it (or `ray.get` it) as usual.
    """
    name = getattr(method, "_method_name", None) or getattr(method, "__name__", "call")
    with tracer().start_as_current_span(f"actor.call {name}", kind=trace.SpanKind.CLIENT) as span:
        span.set_attribute("rpc.system", "ray")
        span.set_attribute("rpc.method", name)
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return method.remote(*args, _trace=carrier, **kwargs)


def traced(fn: Callable[P, R]) -> Callable[P, R]:
    """Mark an actor method (first parameter `self`) as the SERVER side of `actor_call`.

    The wrapper deliberately has no `__wrapped__`: Ray reads a method's signature
    through `inspect.unwrap` (and cloudpickle drops `__signature__`), so the
    wrapper's own `(*args, _trace=None, **kwargs)` is what Ray must see.
    """
    span_name = fn.__qualname__

    if inspect.iscoroutinefunction(fn):

        async def async_wrapper(
            self: Any, *args: Any, _trace: dict[str, str] | None = None, **kwargs: Any
        ) -> Any:
            token = _attach(_trace)
            try:
                with tracer().start_as_current_span(span_name, kind=trace.SpanKind.SERVER):
                    return await fn(self, *args, **kwargs)
            finally:
                otel_context.detach(token)

        return _named_like(async_wrapper, fn)

    def sync_wrapper(
        self: Any, *args: Any, _trace: dict[str, str] | None = None, **kwargs: Any
    ) -> Any:
        token = _attach(_trace)
        try:
            with tracer().start_as_current_span(span_name, kind=trace.SpanKind.SERVER):
                return fn(self, *args, **kwargs)
        finally:
            otel_context.detach(token)

    return _named_like(sync_wrapper, fn)


def _named_like(wrapper: Callable[..., Any], fn: Callable[..., Any]) -> Callable[..., Any]:
    functools.update_wrapper(wrapper, fn, updated=())
    del wrapper.__wrapped__  # type: ignore[attr-defined]
    return wrapper


def _attach(carrier: dict[str, str] | None) -> Token[Context]:
    return otel_context.attach(propagate.extract(carrier or {}))
