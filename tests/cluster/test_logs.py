"""A gateway as `examday up` runs it (a uvicorn child) with JSON logs and OTLP export:
each request is one JSON line carrying its trace id, its spans reach a real OTLP/HTTP
receiver, and no exam number, candidate number, name, candidate id or token appears
in the gateway's log, the Ray workers' logs or the exported spans."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from api.routes.presence import PATH as PRESENCE_PATH
from infra import services
from infra.processes import free_port
from infra.settings import Settings, settings_to_env
from infra.stack import LocalStack
from infra.telemetry import service_name
from tests.cluster.logfiles import json_lines, worker_err_files
from tests.support.factories import joined_candidate, new_exam

T = TypeVar("T")
WAIT_S = 60.0


@dataclass
class ExportedSpan:
    trace_id: str
    name: str
    kind: int
    attributes: dict[str, str]
    service: str


@dataclass
class OtlpReceiver:
    """An OTLP/HTTP trace receiver on loopback: what the gateway's exporter posts."""

    url: str
    spans: list[ExportedSpan] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        found = []
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {
                        a.key: str(getattr(a.value, a.value.WhichOneof("value") or "string_value"))
                        for a in span.attributes
                    }
                    found.append(
                        ExportedSpan(
                            span.trace_id.hex(),
                            span.name,
                            span.kind,
                            attributes,
                            resource.get("service.name", ""),
                        )
                    )
        with self.lock:
            self.bodies.append(body)
            self.spans.extend(found)


@pytest.fixture(scope="module")
def otlp() -> Iterator[OtlpReceiver]:
    port = free_port()
    receiver = OtlpReceiver(f"http://127.0.0.1:{port}")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/traces":
                self.send_response(404)
                self.end_headers()
                return
            receiver.take(body)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class ChildGateway:
    settings: Settings
    log: Path


@pytest.fixture(scope="module")
def json_gateway(
    stack: LocalStack, app: FastAPI, otlp: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChildGateway]:
    """A second gateway of the session's cluster, in its own process, logging JSON."""
    base = stack.settings
    settings = base.model_copy(
        update={
            "gateway_port": free_port(),
            "ops": base.ops.model_copy(update={"log_format": "json"}),
        }
    )
    env = {
        **os.environ,
        **settings_to_env(settings),
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    process = services.gateway_process(settings, env)
    process.log_path = tmp_path_factory.mktemp("gateway") / "gateway.log"
    process.start()
    try:
        process.wait_healthy(lambda: services.gateway_healthy(settings), 120)
        yield ChildGateway(settings, process.log_path)
    finally:
        process.stop()


def _eventually(find: Callable[[], T | None], what: str) -> T:
    deadline = time.monotonic() + WAIT_S
    while True:
        found = find()
        if found:
            return found
        assert time.monotonic() < deadline, f"no {what} within {WAIT_S:g} s"
        time.sleep(0.2)


def _traceparent() -> tuple[str, str]:
    trace_id = secrets.token_hex(16)
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-01"


async def _beat_on_presence_socket(gateway: ChildGateway, headers: dict[str, str]) -> int:
    """One heartbeat on the presence socket; the client's port."""
    async with (
        aiohttp.ClientSession(gateway.settings.gateway_url) as http,
        http.ws_connect(PRESENCE_PATH, headers=headers) as ws,
    ):
        await ws.send_str(json.dumps({"id": "beat-1", "network": "cellular"}))
        # Answered (as a beat, or refused as one too soon after the POST just made).
        answer = json.loads(await asyncio.wait_for(ws.receive_str(), 10))
        assert answer.get("id") == "beat-1" or "error" in answer, answer
        sockname = ws.get_extra_info("sockname")
        assert sockname is not None
        return int(sockname[1])


def _number() -> str:
    # Letters no hex id, pid or timestamp has: a match in the logs is a real leak.
    return "K" + "".join(secrets.choice("GHJKLMNPQRSTUVWXYZ") for _ in range(9))


async def test_requests_log_json_lines_with_their_trace_and_export_spans_by_otlp(
    json_gateway: ChildGateway, otlp: OtlpReceiver, app: FastAPI
) -> None:
    async with httpx.AsyncClient(base_url=json_gateway.settings.gateway_url, timeout=30) as http:
        numbers = {"r1": [_number()]}
        world = await new_exam(http, app.state.runtime, numbers)
        await joined_candidate(http, world.exam_id, numbers["r1"][0])
        cid = world.candidate_ids[numbers["r1"][0]]
        trace_id, parent = _traceparent()
        seen = await http.get(
            f"/v1/exams/{world.exam_id}/rooms/r1/candidates/{cid}",
            headers={**world.proctors["r1"], "traceparent": parent},
        )
    assert seen.status_code == 200, seen.text

    def request_line() -> dict[str, Any] | None:
        lines = json_lines(json_gateway.log)
        return next((line for line in lines if line.get("trace_id") == trace_id), None)

    line = _eventually(request_line, "JSON log line with the request's trace id")
    assert line["logger"] == "examday.requests"
    assert line["component"] == "gateway"
    route = "/v1/exams/{exam_id}/rooms/{room_id}/candidates/{candidate_id}"
    assert (line["method"], line["route"], line["status"]) == ("GET", route, 200)
    assert len(line["span_id"]) == 16
    # The health probes (start-up waited on /healthz) are not logged.
    assert not [x for x in json_lines(json_gateway.log) if x.get("route") == "/healthz"]

    def exported() -> list[ExportedSpan]:
        with otlp.lock:
            return [span for span in otlp.spans if span.trace_id == trace_id]

    spans = _eventually(exported, "span of the request at the OTLP receiver")
    names = {span.name for span in spans}
    assert f"GET {route}" in names, names
    assert {span.service for span in spans} == {service_name(json_gateway.settings, "gateway")}
    # The gateway's call into the room shard is part of the same trace.
    _eventually(
        lambda: [s for s in exported() if s.attributes.get("rpc.system") == "ray"],
        "span of the actor call",
    )


async def test_nothing_personal_in_the_real_logs_and_exported_spans(
    json_gateway: ChildGateway, otlp: OtlpReceiver, app: FastAPI, settings: Settings
) -> None:
    numbers = {"p1": [_number(), _number()], "p2": [_number()]}
    stranger = _number()  # a number not on the roster: a failed login
    client_ports: list[int] = []
    async with httpx.AsyncClient(base_url=json_gateway.settings.gateway_url, timeout=30) as http:
        world = await new_exam(http, app.state.runtime, numbers)
        tokens = []
        for room, room_numbers in numbers.items():
            for number in room_numbers:
                headers = await joined_candidate(http, world.exam_id, number)
                tokens.append(headers["authorization"].removeprefix("Bearer "))
                beat = await http.post(
                    "/v1/me/heartbeat", json={"network": "cellular"}, headers=headers
                )
                assert beat.status_code == 200, beat.text
                client_ports.append(await _beat_on_presence_socket(json_gateway, dict(headers)))
                cid = world.candidate_ids[number]
                seen = await http.get(
                    f"/v1/exams/{world.exam_id}/rooms/{room}/candidates/{cid}",
                    headers=world.proctors[room],
                )
                assert seen.status_code == 200, seen.text
        refused = await http.post(
            "/v1/sessions", json={"exam_no": world.exam_id, "candidate_no": stranger}
        )
        assert refused.status_code == 401, refused.text
        _, parent = _traceparent()
        last = await http.get("/metrics", headers={"traceparent": parent})
        assert last.status_code == 200
    # The metrics request is the last; once its line is written, so are the others'.
    _eventually(
        lambda: [
            line
            for line in json_lines(json_gateway.log)
            if line.get("route") == "/metrics" and line.get("trace_id") == parent.split("-")[1]
        ],
        "log line of the last request",
    )
    secrets_ = [
        stranger,
        *(n for ns in numbers.values() for n in ns),
        *(f"Candidate {n}" for ns in numbers.values() for n in ns),
        *world.candidate_ids.values(),
        *tokens,
    ]
    gateway_log = json_gateway.log.read_text(errors="replace")
    routes = {line.get("route") for line in json_lines(json_gateway.log)}
    assert "/v1/exams/{exam_id}/rooms/{room_id}/candidates/{candidate_id}" in routes
    with otlp.lock:
        exported = "\n".join(f"{s.name} {s.attributes}" for s in otlp.spans)
    places = {"gateway log": gateway_log, "exported spans": exported}
    for path in worker_err_files(settings):
        places[path.name] = path.read_text(errors="replace")
    assert len(places) > 2  # the Ray workers' logs were read
    for where, body in places.items():
        leaked = [s for s in secrets_ if s in body]
        assert leaked == [], f"personal data in {where}: {leaked}"
    # Nor the candidates' addresses: uvicorn names them in a line for each WebSocket.
    assert len(client_ports) == 3
    assert [p for p in client_ports if f":{p}" in gateway_log or f", {p})" in gateway_log] == []
    assert "WebSocket" not in gateway_log
