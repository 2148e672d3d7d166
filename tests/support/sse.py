"""A minimal Server-Sent Events reader for tests (the real wire format over real HTTP)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    data: dict[str, Any]


async def read_events(
    client: httpx.AsyncClient,
    url: str,
    headers: httpx.Headers,
    *,
    last_event_id: str | None = None,
    until: Callable[[list[Event]], bool],
    within: float = 20.0,
) -> list[Event]:
    """Read events until `until(events)` holds; fail after `within` seconds."""
    events: list[Event] = []
    request_headers = httpx.Headers(headers)
    if last_event_id:
        request_headers["Last-Event-ID"] = last_event_id

    async def consume() -> None:
        async with client.stream("GET", url, headers=request_headers, timeout=None) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            fields: dict[str, str] = {}
            async for line in response.aiter_lines():
                if line == "":
                    if "data" in fields:
                        events.append(
                            Event(
                                fields.get("id", ""),
                                fields.get("event", "message"),
                                json.loads(fields["data"]),
                            )
                        )
                        if until(events):
                            return
                    fields = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")

    await asyncio.wait_for(consume(), within)
    return events
