"""OpenTelemetry `service.name`: one per component by default, the standard
`OTEL_SERVICE_NAME` wins, `EXAMDAY_SERVICE_NAME` only names the namespace and prefix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from infra.settings import Settings
from tests.support.factories import joined_candidate, new_exam

ROOT = Path(__file__).resolve().parents[2]
# A process wired as a room shard is (`open_process` calls `setup_tracing`): its resource.
PROBE = """
import json
from infra.settings import Settings
from infra.telemetry import setup_tracing
provider = setup_tracing(Settings(), "room_shard")
print(json.dumps(dict(provider.resource.attributes)))
"""


def resource_of(**env: str) -> dict[str, Any]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "EXAMDAY_SERVICE_NAME", "EXAMDAY_TRACE_FILE"))
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**base, "EXAMDAY_ENV": "development", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    attributes: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return attributes


def test_each_component_is_its_own_service_unless_otel_service_name_says() -> None:
    default = resource_of()
    assert (default["service.name"], default["service.namespace"]) == (
        "examday-room-shard",
        "examday",
    )
    assert default["examday.component"] == "room_shard"
    prefixed = resource_of(EXAMDAY_SERVICE_NAME="acme")
    assert (prefixed["service.name"], prefixed["service.namespace"]) == ("acme-room-shard", "acme")
    # The standard variables win over ours, EXAMDAY_SERVICE_NAME included.
    named = resource_of(OTEL_SERVICE_NAME="rooms-eu", EXAMDAY_SERVICE_NAME="acme")
    assert named["service.name"] == "rooms-eu"
    attributed = resource_of(OTEL_RESOURCE_ATTRIBUTES="service.name=rooms-cn,service.namespace=x")
    assert (attributed["service.name"], attributed["service.namespace"]) == ("rooms-cn", "x")


async def test_gateway_and_actor_spans_name_their_own_component(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    world = await new_exam(client, app.state.runtime, {"s1": ["6630501"]})
    await joined_candidate(client, world.exam_id, "6630501")  # the gateway calls a room shard
    assert settings.trace_file is not None
    spans = [json.loads(line) for line in settings.trace_file.read_text().splitlines()]
    gateway = {s["service"] for s in spans if s["pid"] == os.getpid()}
    assert gateway == {"examday-gateway"}
    shards = {s["service"] for s in spans if s["name"].startswith("RoomShard.")}
    assert shards == {"examday-room-shard"}
    services = {s["service"] for s in spans}
    assert "examday" not in services  # no process shares one name with all the others
