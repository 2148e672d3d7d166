"""Redis killed (-9) under 200 heartbeating candidates, then started again from its AOF.

While it is down or replaying its AOF every request is answered 503 `hot_state_down`
with Retry-After (never a 500, never a hung request); once it is back the room shards
re-fence and the candidates beat normally again, and every heartbeat acknowledged before,
during or after the outage is in its room's journal: with `appendfsync always` an
acknowledged event is on disk before its answer, so none is lost.

This kills the Redis the whole test session uses. The stack's supervisor starts it again
on the same port and data directory (`infra.stack.Supervisor`); should it not have within
2 s, the test does; and it ends only once every candidate beats normally again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections import Counter
from typing import Any

import httpx
from fastapi import FastAPI
from redis.asyncio import Redis
from redis.exceptions import RedisError

from core import keys
from infra.processes import ManagedProcess, port_open
from infra.redis import text
from infra.stack import LocalStack
from tests.accounts.test_login import runtime_of
from tests.support.factories import joined_candidate, new_exam
from tests.support.journal import room_journal

ROOMS = 5
PER_ROOM = 40
# Beats each candidate must have acknowledged after Redis is back, to count as recovered.
BEATS_AFTER = 3
RECOVERY_DEADLINE_S = 120.0


async def _wait_aof_on(redis: Redis) -> None:
    """Turn the AOF on at run time (the session stack starts without it) and wait for the
    rewrite that writes the current data set into it: only then does a restart keep it."""
    await redis.config_set("appendonly", "yes")
    await redis.config_set("appendfsync", "always")
    while True:
        info: dict[str, Any] = await redis.info("persistence")
        busy = info["aof_rewrite_in_progress"] or info["aof_rewrite_scheduled"]
        if info["aof_enabled"] and not busy:
            return
        await asyncio.sleep(0.1)


def _redis_process(stack: LocalStack) -> ManagedProcess:
    return next(p for p in stack.processes if p.name == "redis")


def _restart_redis(stack: LocalStack) -> None:
    """The same redis-server on the same port and data directory, loading its AOF
    (later arguments override earlier ones), unless something already restarted it.

    Replaces the killed one in the stack, so that the session's teardown stops it."""
    if port_open(stack.settings.redis_host, stack.settings.redis_port):
        return
    old = _redis_process(stack)
    argv = [*old.argv, "--appendonly", "yes", "--appendfsync", "always"]
    stack.replace(old, ManagedProcess(old.name, argv, old.log_path))


async def _wait_ping(redis: Redis, deadline: float) -> None:
    while time.monotonic() < deadline:
        # Refused, or LOADING while the AOF replays.
        with contextlib.suppress(RedisError, OSError):
            if await redis.ping():
                return
        await asyncio.sleep(0.1)
    raise AssertionError("redis did not come back")


async def _watch(
    http: httpx.AsyncClient, url: str, proctor: httpx.Headers, opened: asyncio.Event
) -> str:
    """Read a room's event stream until it ends; its last line. `opened` is set once the
    stream's answer has begun."""
    last = ""
    async with http.stream("GET", url, headers=proctor, timeout=None) as response:
        assert response.status_code == 200, await response.aread()
        opened.set()
        async for line in response.aiter_lines():
            last = line or last
    return last


async def test_acknowledged_beats_survive_a_redis_kill(
    client: httpx.AsyncClient, app: FastAPI, stack: LocalStack
) -> None:
    runtime = runtime_of(app)
    rooms = {f"ro{r}": [f"o{r}{i:03d}" for i in range(PER_ROOM)] for r in range(ROOMS)}
    world = await new_exam(client, runtime, rooms, room_capacity=PER_ROOM)
    numbers = [n for ns in rooms.values() for n in ns]
    room_of = {n: keys.room_key(world.exam_id, room) for room, ns in rooms.items() for n in ns}
    probe = Redis.from_url(stack.settings.redis_url, socket_connect_timeout=1, socket_timeout=5)
    acked: list[tuple[str, str]] = []  # (room key, event id) of every 200
    statuses: Counter[int] = Counter()
    refused: Counter[str] = Counter()  # the reasons of the 503s
    bad: list[str] = []  # answers that break the promise: 5xx other than 503 + Retry-After
    phase = {"killed": False, "back": False}
    after: Counter[str] = Counter()  # beats acknowledged per candidate since Redis came back
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(
        base_url=runtime.settings.gateway_url, limits=limits, timeout=60
    ) as http:
        fleet = await asyncio.gather(*(joined_candidate(http, world.exam_id, n) for n in numbers))
        await _wait_aof_on(probe)

        async def beat(number: str, headers: httpx.Headers) -> None:
            deadline = time.monotonic() + RECOVERY_DEADLINE_S
            while after[number] < BEATS_AFTER and time.monotonic() < deadline:
                key = str(uuid.uuid4().hex)
                back = phase["back"]
                try:
                    response = await http.post(
                        "/v1/me/heartbeat",
                        json={"network": "wifi"},
                        headers={**headers, "idempotency-key": key},
                    )
                except httpx.TimeoutException:
                    bad.append(f"{number}: no answer within 60 s")
                    continue
                statuses[response.status_code] += 1
                if response.status_code == 200:
                    acked.append((room_of[number], response.json()["event_id"]))
                    if back:
                        after[number] += 1
                    await asyncio.sleep(0.2)
                    continue
                body = response.json() if response.content else {}
                retry_after = response.headers.get("retry-after")
                if response.status_code == 503 and retry_after and body.get("reason"):
                    refused[body["reason"]] += 1
                    await asyncio.sleep(0.2)
                    continue
                # Anything else (a 500, a 4xx such as a lost session or `not_joined`).
                bad.append(f"{number}: {response.status_code} {response.text[:300]}")
                await asyncio.sleep(0.2)

        # A proctor's event stream open across the kill: it must end cleanly (its answer
        # has begun, it cannot become a 503), not be cut off mid-frame. Opened first, on
        # a client of its own: behind 200 beating candidates in one connection pool it
        # could otherwise begin only after the kill.
        url = f"/v1/exams/{world.exam_id}/rooms/ro0/events"
        opened = asyncio.Event()
        watcher = httpx.AsyncClient(base_url=runtime.settings.gateway_url, timeout=60)
        watching = asyncio.create_task(_watch(watcher, url, world.proctors["ro0"], opened))
        await asyncio.wait_for(opened.wait(), 30)
        beating = asyncio.gather(*(beat(n, h) for n, h in zip(numbers, fleet, strict=True)))
        await asyncio.sleep(3)
        acked_before_kill = len(acked)
        killed = _redis_process(stack)
        assert killed.pid is not None
        os.kill(killed.pid, signal.SIGKILL)
        phase["killed"] = True
        await asyncio.sleep(2)  # an outage the candidates notice
        down = dict(statuses)
        _restart_redis(stack)
        await _wait_ping(probe, time.monotonic() + 60)
        phase["back"] = True
        await beating
        stream_end = await asyncio.wait_for(watching, 30)
        await watcher.aclose()

    reasons = Counter(r.split(":", 1)[1][:60] for r in bad)
    print(
        f"\n{len(numbers)} candidates; acknowledged {acked_before_kill} beats before the kill, "
        f"{len(acked)} in all; answers {dict(statuses)} (at restart {down}); 503s {dict(refused)}; "
        f"bad {dict(reasons)}"
    )
    assert not bad, bad[:5]
    assert stream_end == ": hot state unavailable; reconnect", stream_end
    # Redis down, wherever it was met (the gateway, or inside a room shard), is one answer.
    assert set(refused) == {"hot_state_down"}, refused
    assert acked_before_kill > 0
    assert statuses[503] > 0, "the outage was not seen"
    # Every candidate beats normally again.
    assert sorted(after.values()) == [BEATS_AFTER] * len(numbers), Counter(after.values())
    # No acknowledged event is lost: each one is in its room's journal (both its streams).
    journaled: set[tuple[str, str]] = set()
    for key in set(room_of.values()):
        journaled |= {(key, event_id) for event_id, _ in await room_journal(probe, key)}
    lost = [a for a in acked if a not in journaled]
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged beats lost, e.g. {lost[:3]}"
    await probe.aclose()


async def _room_with(
    client: httpx.AsyncClient, app: FastAPI, numbers: list[str]
) -> tuple[str, list[httpx.Headers]]:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"lf": numbers}, room_capacity=len(numbers))
    fleet = [await joined_candidate(client, world.exam_id, n) for n in numbers]
    return keys.room_key(world.exam_id, "lf"), fleet


async def test_a_lost_fence_is_taken_again(client: httpx.AsyncClient, app: FastAPI) -> None:
    """An AOF written `everysec` may come back without a room's owner key (its take-over
    was in the lost second): the owning shard fences the room again and goes on."""
    runtime = runtime_of(app)
    key, (headers,) = await _room_with(client, app, ["lf001"])
    await runtime.redis.delete(keys.room_owner_key(key), keys.room_owner_epoch_key(key))
    response = await client.post("/v1/me/heartbeat", json={}, headers=headers)
    assert response.status_code == 200, response.text
    event_id = response.json()["event_id"]
    assert event_id in {i for i, _ in await room_journal(runtime.redis, key)}
    fence = text(await runtime.redis.get(keys.room_owner_key(key)))
    assert fence.startswith(f"{await runtime.rooms.directory.owner(key)}#")


async def test_a_journal_that_lost_its_tail_is_replayed_before_the_next_write(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """An AOF written `everysec` may come back without the last second of a room's events
    while the owner key survived: the shard must not write on from its copy in memory (it
    would journal heartbeats of a candidate whose join the journal no longer has), but
    rebuild the room from the journal first. The candidate then has to join again."""
    runtime = runtime_of(app)
    key, (first, second) = await _room_with(client, app, ["lt001", "lt002"])
    journal = await room_journal(runtime.redis, key)
    last_id, last = journal[-1]
    assert last["type"] == "joined"  # the second candidate's join: it is "lost" here
    await runtime.redis.xdel(keys.room_events_key(key), last_id)
    response = await client.post("/v1/me/heartbeat", json={}, headers=second)
    assert response.status_code == 403, response.text
    assert response.json()["reason"] == "not_joined"
    view = await runtime.rooms.room_view(key)
    assert set(view["presence"]) == {e["cid"] for _, e in await room_journal(runtime.redis, key)}
    assert (await client.post("/v1/me/heartbeat", json={}, headers=first)).status_code == 200
    rejoined = await client.post("/v1/me/join", json={"network": "wifi"}, headers=second)
    assert rejoined.status_code == 200, rejoined.text
