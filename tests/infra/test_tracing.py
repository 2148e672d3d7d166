from __future__ import annotations

import asyncio
import json

import httpx
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from infra.stack import LocalStack


async def test_gateway_trace_continues_inside_the_actor(
    client: httpx.AsyncClient, app: FastAPI, stack: LocalStack
) -> None:
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))

    response = await client.get("/readyz")
    assert response.status_code == 200

    # The server span ends after the last byte is sent, so it may trail the response.
    for _ in range(100):
        spans = memory.get_finished_spans()
        servers = [
            s for s in spans if s.kind == trace.SpanKind.SERVER and s.name.endswith("/readyz")
        ]
        if servers:
            break
        await asyncio.sleep(0.02)
    assert servers, [s.name for s in spans]
    server = servers[0]
    call = next(s for s in spans if s.name == "actor.call ping")
    assert call.context is not None
    assert server.context is not None
    assert call.context.trace_id == server.context.trace_id
    # Stable HTTP semantic conventions.
    assert server.attributes is not None
    assert server.attributes.get("http.request.method") == "GET"
    assert server.attributes.get("http.route") == "/readyz"

    trace_file = stack.settings.trace_file
    assert trace_file is not None
    actor_spans = [json.loads(line) for line in trace_file.read_text().splitlines()]
    inside = [
        s
        for s in actor_spans
        if s["name"] == "HealthProbe.ping" and s["trace_id"] == f"{call.context.trace_id:032x}"
    ]
    assert len(inside) == 1, actor_spans[-5:]
    assert inside[0]["parent_span_id"] == f"{call.context.span_id:016x}"
    assert inside[0]["kind"] == "SERVER"


async def test_gateway_span_continues_the_callers_trace_and_names_no_path(
    client: httpx.AsyncClient,
) -> None:
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"

    response = await client.get(
        "/v1/exams/secret-exam-id",  # an id-bearing path, asked without a session
        headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
    )
    assert response.status_code == 401

    for _ in range(100):
        servers = [
            s
            for s in memory.get_finished_spans()
            if s.kind == trace.SpanKind.SERVER and s.context.trace_id == int(trace_id, 16)
        ]
        if servers:
            break
        await asyncio.sleep(0.02)
    assert len(servers) == 1
    server = servers[0]
    assert server.parent is not None
    assert server.parent.span_id == int(parent_id, 16)
    assert server.name == "GET /v1/exams/{exam_id}"
    attributes = dict(server.attributes or {})
    assert attributes["http.response.status_code"] == 401
    assert "secret-exam-id" not in json.dumps(attributes)
