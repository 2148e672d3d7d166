"""Rooms survive the loss of their shard and a rebalance with no acknowledged event lost."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter, defaultdict
from typing import Any

import httpx
import pytest
import ray
from fastapi import FastAPI

from actors.rooms.journal import event_order
from api.runtime import Runtime
from core import hashing, keys
from tests.accounts.test_login import runtime_of
from tests.support.factories import ExamWorld, candidate_login, new_exam
from tests.support.journal import room_journal
from tests.support.sse import Event, read_events

ROOMS = 4
PER_ROOM = 50


async def _fleet(client: httpx.AsyncClient, world: ExamWorld) -> dict[str, httpx.Headers]:
    async def one(number: str) -> tuple[str, httpx.Headers]:
        headers = await candidate_login(client, world.exam_id, number)
        assert (
            await client.post("/v1/me/consent", json={"policy_version": "1"}, headers=headers)
        ).status_code == 204
        joined = await client.post("/v1/me/join", json={"network": "wifi"}, headers=headers)
        assert joined.status_code == 200, joined.text
        return number, headers

    numbers = [n for ns in world.rooms.values() for n in ns]
    return dict(await asyncio.gather(*(one(n) for n in numbers)))


async def _heartbeat(
    client: httpx.AsyncClient,
    fleet: dict[str, httpx.Headers],
    seconds: float,
    acked: list[str],
    errors: Counter[str],
) -> None:
    """Every candidate beats every second; a 503 is retried after Retry-After, as clients do."""

    async def beat(headers: httpx.Headers) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            response = await client.post("/v1/me/heartbeat", json={}, headers=headers)
            if response.status_code == 200:
                acked.append(response.json()["event_id"])
                await asyncio.sleep(1.0)
            else:
                errors[f"{response.status_code} {response.json().get('reason')}"] += 1
                await asyncio.sleep(float(response.headers.get("retry-after", "1")))

    await asyncio.gather(*(beat(h) for h in fleet.values()))


async def _journal(runtime: Runtime, key: str) -> list[tuple[str, dict[str, Any]]]:
    return await room_journal(runtime.redis, key)  # evidence and heartbeats


async def _owner_pid(runtime: Runtime, key: str) -> tuple[str, int]:
    owner = await runtime.rooms.directory.owner(key)
    handle = await runtime.rooms.handle(owner)
    stats = await handle.stats.remote()
    return owner, int(stats["pid"])


@pytest.fixture
async def big_world(client: httpx.AsyncClient, app: FastAPI) -> ExamWorld:
    rooms = {f"k{r}": [f"{r}{i:03d}" for i in range(PER_ROOM)] for r in range(ROOMS)}
    return await new_exam(client, runtime_of(app), rooms, room_capacity=PER_ROOM)


def _check_journals(
    journals: dict[str, list[tuple[str, dict[str, Any]]]], acked: list[str]
) -> None:
    stored = {event_id for entries in journals.values() for event_id, _ in entries}
    lost = [event_id for event_id in acked if event_id not in stored]
    assert lost == [], f"{len(lost)} acknowledged events missing"


async def test_killed_room_shard_comes_back_with_every_acknowledged_event(
    client: httpx.AsyncClient, app: FastAPI, big_world: ExamWorld
) -> None:
    runtime = runtime_of(app)
    world = big_world
    async with httpx.AsyncClient(
        base_url=runtime.settings.gateway_url, limits=httpx.Limits(max_connections=250), timeout=60
    ) as http:
        fleet = await _fleet(http, world)
        watched = keys.room_key(world.exam_id, "k0")
        owner, pid = await _owner_pid(runtime, watched)
        proctor = world.proctors["k0"]
        url = f"/v1/exams/{world.exam_id}/rooms/k0/events"
        before = await read_events(http, url, proctor, until=lambda ev: len(ev) >= PER_ROOM)

        acked: list[str] = []
        errors: Counter[str] = Counter()
        beating = asyncio.create_task(_heartbeat(http, fleet, 12.0, acked, errors))
        await asyncio.sleep(3.0)
        os.kill(pid, signal.SIGKILL)
        await beating
    print(
        f"killed {owner} (pid {pid}); {len(acked)} heartbeats acknowledged; errors {dict(errors)}"
    )

    new_owner, new_pid = await _owner_pid(runtime, watched)
    assert new_owner == owner
    assert new_pid != pid
    journals = {
        keys.room_key(world.exam_id, r): await _journal(runtime, keys.room_key(world.exam_id, r))
        for r in world.rooms
    }
    _check_journals(journals, acked)

    # Every room is rebuilt from its journal: the presence the shard holds is what the journal says.
    for key, entries in journals.items():
        view = await runtime.rooms.room_view(key)
        beats = Counter(e["cid"] for _, e in entries if e["type"] == "heartbeat")
        assert {cid: p["heartbeats"] for cid, p in view["presence"].items()} == {
            cid: beats.get(cid, 0) for cid in view["presence"]
        }
        assert all(p["state"] == "joined" for p in view["presence"].values())
        assert view["last_event_id"] == entries[-1][0]

    # The proctor resumes from the last event seen before the kill and misses nothing.
    expected = [i for i, _ in journals[watched] if event_order(i) > event_order(before[-1].id)]
    resumed: list[Event] = await read_events(
        client, url, proctor, last_event_id=before[-1].id, until=lambda ev: len(ev) >= len(expected)
    )
    assert [e.id for e in resumed] == expected


async def test_rebalance_under_load_loses_nothing(
    client: httpx.AsyncClient, app: FastAPI, big_world: ExamWorld
) -> None:
    runtime = runtime_of(app)
    world = big_world
    directory = runtime.rooms.directory
    before = {r: await directory.owner(keys.room_key(world.exam_id, r)) for r in world.rooms}
    # A name that rendezvous hashing gives at least one of these rooms to: with a random
    # exam id, a fixed name takes none of 4 rooms about one run in five.
    members = await directory.members()
    extra = next(
        name
        for name in (f"room-shard-rebalance-{i}" for i in range(1000))
        if any(
            hashing.owner(keys.room_key(world.exam_id, r), [*members, name]) == name
            for r in world.rooms
        )
    )
    async with httpx.AsyncClient(
        base_url=runtime.settings.gateway_url, limits=httpx.Limits(max_connections=250), timeout=60
    ) as http:
        fleet = await _fleet(http, world)
        acked: list[str] = []
        errors: Counter[str] = Counter()
        beating = asyncio.create_task(_heartbeat(http, fleet, 14.0, acked, errors))
        await asyncio.sleep(2.0)
        await runtime.rooms.add_shard(extra)
        await asyncio.sleep(5.0)
        during = {r: await directory.owner(keys.room_key(world.exam_id, r)) for r in world.rooms}
        await directory.remove(extra)
        await beating
    handle = await runtime.rooms.handle(extra)
    await handle.release_lost_rooms.remote()
    still_held = await handle.owned_rooms.remote()
    ray.kill(handle)
    print(
        f"owners before {before}, during {during}; {len(acked)} acknowledged; errors {dict(errors)}"
    )
    moved = [r for r in world.rooms if before[r] != during[r]]
    assert all(during[r] == extra for r in moved)
    journals = {
        keys.room_key(world.exam_id, r): await _journal(runtime, keys.room_key(world.exam_id, r))
        for r in world.rooms
    }
    _check_journals(journals, acked)
    # Each room's journal was written by one owner at a time: no event id appears twice.
    for entries in journals.values():
        ids = [event_id for event_id, _ in entries]
        assert ids == sorted(set(ids), key=event_order)
    assert moved, "the new shard took no room: nothing was rebalanced"
    assert still_held == []
    owners: defaultdict[str, int] = defaultdict(int)
    for r in world.rooms:
        owners[await directory.owner(keys.room_key(world.exam_id, r))] += 1
    assert extra not in owners
