"""A client that hangs up mid-body gets no 500 and leaves no error in the logs."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Message

from tests.accounts.test_login import runtime_of
from tests.support.factories import joined_candidate, new_exam


async def test_a_whip_offer_cut_short_is_a_quiet_400(
    client: httpx.AsyncClient, app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["7001"]}, with_proctors=False)
    headers = await joined_candidate(client, world.exam_id, "7001")
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/whip/me/camera", "raw_path": b"/v1/whip/me/camera",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "headers": [
            (b"authorization", headers["authorization"].encode()),
            (b"content-type", b"application/sdp"),
            (b"content-length", b"4000"),
        ],
    }  # fmt: skip
    incoming: list[Message] = [
        {"type": "http.request", "body": b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n", "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    with caplog.at_level(logging.INFO):
        await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert start["status"] == 400
    assert json.loads(body)["reason"] == "client_disconnected"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
