"""Resource exhaustion (issue #22, finding 5): what one caller can make the platform spend.

Uploads, image decodes, room event streams and data-subject requests, through the
real gateway, Redis and retention actor. The WHEP bounds are in
`tests/media/gateway/test_exhaustion_whep.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator

import httpx
from fastapi import FastAPI
from redis.asyncio import Redis

from api.runtime import Runtime
from core import keys
from infra import tokens
from ml.images import decode_slot
from tests.privacy.conftest import (
    ended_exam,
    image_bytes,
    image_headers,
    joined_before_the_end,
    runtime_of,
)
from tests.privacy.helpers import platform_data, versions
from tests.support.factories import joined_candidate, new_exam
from tests.support.wait import until


def _refused(response: httpx.Response, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["reason"] == reason


@contextlib.contextmanager
def configured(runtime: Runtime, **changes: object) -> Iterator[None]:
    """The gateway's settings with `changes`, for the routes that read them per request."""
    before = runtime.settings
    runtime.settings = before.model_copy(update=changes)
    try:
        yield
    finally:
        runtime.settings = before


@contextlib.asynccontextmanager
async def monitored(redis: Redis) -> AsyncIterator[list[str]]:
    """Every command the Redis server runs meanwhile, from any process (MONITOR)."""
    seen: list[str] = []
    marker = f"monitor-end-{secrets.token_hex(4)}"
    async with redis.monitor() as monitor:

        async def collect() -> None:
            while True:
                command = str((await monitor.next_command())["command"])
                if marker in command:
                    return
                seen.append(command)

        task = asyncio.get_running_loop().create_task(collect())
        try:
            yield seen
            await redis.echo(marker)
            await asyncio.wait_for(task, 30)
        finally:
            task.cancel()


# -- uploads and decodes ----------------------------------------------------------------


async def test_refused_uploads_spend_the_candidates_upload_budget(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["1001"]})
    me = await joined_candidate(client, world.exam_id, "1001")
    budget = runtime.settings.privacy.upload_attempts_per_window
    for _ in range(budget):
        bad = await client.post(
            "/v1/uploads/photos", content=b"not an image", headers=image_headers(me)
        )
        _refused(bad, 400, "not_an_image")
    # Refusals were not free: a good image now finds the budget spent.
    good = await client.post("/v1/uploads/photos", content=image_bytes(), headers=image_headers(me))
    _refused(good, 429, "upload_limit")
    assert int(good.headers["retry-after"]) >= 1
    cid = world.candidate_ids["1001"]
    assert await runtime.privacy.candidate_uploads(world.exam_id, cid) == []


async def test_image_decodes_are_bounded_per_process(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["1001"]})
    me = await joined_candidate(client, world.exam_id, "1001")
    face = runtime.settings.face
    with contextlib.ExitStack() as taken:
        for _ in range(face.max_concurrent_decodes):
            taken.enter_context(decode_slot(face))  # every slot of this (the gateway's) process
        busy = await client.post(
            "/v1/uploads/photos", content=image_bytes(), headers=image_headers(me)
        )
    _refused(busy, 503, "busy")
    assert busy.headers["retry-after"] == "1"
    cid = world.candidate_ids["1001"]
    assert await runtime.privacy.candidate_uploads(world.exam_id, cid) == []
    # Slots free again: the same upload goes through.
    stored = await client.post(
        "/v1/uploads/photos", content=image_bytes(), headers=image_headers(me)
    )
    assert stored.status_code == 201, stored.text


# -- room event streams -----------------------------------------------------------------


async def test_event_streams_per_staff_member_are_capped(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["1001"]})
    proctor = world.proctors["r1"]
    url = f"/v1/exams/{world.exam_id}/rooms/r1/events"
    cap = runtime.settings.sse_streams_per_staff
    async with contextlib.AsyncExitStack() as streams:
        opened = []
        for _ in range(cap):
            response = await streams.enter_async_context(
                client.stream("GET", url, headers=proctor, timeout=None)
            )
            assert response.status_code == 200
            opened.append(response)
        over = await client.get(url, headers=proctor)
        _refused(over, 429, "too_many_streams")
        assert int(over.headers["retry-after"]) >= 1
        await opened[0].aclose()

        async def place_freed() -> bool:
            again = await streams.enter_async_context(
                client.stream("GET", url, headers=proctor, timeout=None)
            )
            if again.status_code == 200:
                return True
            await again.aclose()
            return False

        # A stream that ends gives its place back.
        await until(place_freed, within=20, every=0.2)


async def test_logout_ends_the_staff_members_event_streams(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["1001"]})
    await joined_candidate(client, world.exam_id, "1001")
    proctor = world.proctors["r1"]
    url = f"/v1/exams/{world.exam_id}/rooms/r1/events"
    ended: list[str] = []
    with configured(runtime, sse_recheck_seconds=1.0):
        async with client.stream("GET", url, headers=proctor, timeout=None) as response:
            assert response.status_code == 200
            lines = response.aiter_lines()
            while "event: joined" not in await anext(lines):
                pass
            logout = await client.delete("/v1/sessions/current", headers=proctor)
            assert logout.status_code == 204

            async def read_to_the_end() -> None:
                async for line in lines:
                    ended.append(line)

            # Ends by itself, within a recheck and a blocking read of the journal.
            await asyncio.wait_for(read_to_the_end(), 10)
    assert "event: end" in ended
    assert any("session_ended" in line for line in ended)
    leases = keys.staff_streams_key(_username(runtime, proctor))
    assert await runtime.redis.zcard(leases) == 0  # its place is given back


def _username(runtime: Runtime, headers: httpx.Headers) -> str:
    token = headers["authorization"].removeprefix("Bearer ")
    key = runtime.settings.token_signing_key.get_secret_value().encode()
    return tokens.verify(token, key).sub


# -- data-subject requests --------------------------------------------------------------


async def test_data_requests_are_limited_per_candidate(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["1001", "1002"]})
    me = await joined_candidate(client, world.exam_id, "1001")
    other = await joined_candidate(client, world.exam_id, "1002")
    budget = runtime.settings.privacy.subject_requests_per_window
    for _ in range(budget - 1):
        assert (await client.get("/v1/me/data", headers=me)).status_code == 200
    # Copies and deletion requests share one budget.
    asked = await client.post("/v1/me/deletion-request", headers=me)
    assert asked.status_code == 200, asked.text
    _refused(await client.get("/v1/me/data", headers=me), 429, "subject_request_limit")
    refused = await client.post("/v1/me/deletion-request", headers=me)
    _refused(refused, 429, "subject_request_limit")
    assert int(refused.headers["retry-after"]) >= 1
    # Another candidate's budget is their own.
    assert (await client.get("/v1/me/data", headers=other)).status_code == 200


async def test_a_data_copy_reads_nothing_of_other_rooms_or_candidates(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"near": ["1001"], "far": ["2001", "2002"]})
    exam = world.exam_id
    me = await joined_candidate(client, exam, "1001")
    others = [world.candidate_ids["2001"], world.candidate_ids["2002"]]
    async with monitored(runtime.redis) as seen:
        copy = await client.get("/v1/me/data", headers=me)
    assert copy.status_code == 200, copy.text
    assert seen, "MONITOR saw nothing"
    _untouched(seen, exam, "far", others)


async def test_a_deletion_request_runs_no_exam_wide_sweep(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await ended_exam(client, runtime, {"near": ["1001"], "far": ["2001"]}, retention=[])
    exam, mine, theirs = world.exam_id, world.candidate_ids["1001"], world.candidate_ids["2001"]
    for cid in (mine, theirs):
        await platform_data(runtime, exam, cid)
    me = await joined_before_the_end(client, runtime, exam, "1001")
    async with monitored(runtime.redis) as seen:
        asked = await client.post("/v1/me/deletion-request", headers=me)
    assert asked.status_code == 200, asked.text
    assert asked.json()["status"] == "done"
    assert asked.json()["receipts"]
    assert await versions(runtime, "cn-north", f"{exam}/recordings/{mine}/") == set()
    assert await versions(runtime, "cn-north", f"{exam}/recordings/{theirs}/") != set()
    _untouched(seen, exam, "far", [theirs])


def _untouched(seen: list[str], exam: str, room: str, cids: list[str]) -> None:
    """No command named the other room's roster or journal, or another candidate."""
    names = [keys.room_roster_key(exam, room), keys.room_key(exam, room), *cids]
    touched = [c for c in seen if any(name in c for name in names)]
    assert touched == [], touched[:5]
    assert not [c for c in seen if c.upper().startswith("SCAN ")], "a scan of the keyspace"
