"""Heartbeats are group-committed: many candidates' beats in one shard call and one
journal round trip per room, each beat still journaled once before its answer."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import httpx
from fastapi import FastAPI

from api.runtime import Runtime
from core import keys
from tests.accounts.test_login import runtime_of
from tests.support.factories import joined_candidate, new_exam
from tests.support.journal import room_journal


async def _journal(runtime: Runtime, key: str) -> list[tuple[str, dict[str, Any]]]:
    return await room_journal(runtime.redis, key)  # evidence and heartbeats


async def _shard_stats(runtime: Runtime, key: str) -> dict[str, Any]:
    handle = await runtime.rooms.handle(await runtime.rooms.directory.owner(key))
    stats: dict[str, Any] = await handle.stats.remote()
    return stats


async def test_one_call_answers_each_beat_on_its_own(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"b1": ["b1001", "b1002", "b1003", "b1004"]})
    for number in ("b1001", "b1002", "b1003"):
        await joined_candidate(client, world.exam_id, number)
    view = await runtime.rooms.room_view(keys.room_key(world.exam_id, "b1"))
    cids = sorted(view["presence"])
    assert len(cids) == 3
    key = keys.room_key(world.exam_id, "b1")
    handle = await runtime.rooms.handle(await runtime.rooms.directory.owner(key))
    retried = uuid.uuid4().hex
    newcomer = runtime.exams.candidate_id(world.exam_id, "b1004")
    beats = [
        (key, cids[0], "wifi", retried, False),
        (key, cids[1], "cellular", uuid.uuid4().hex, False),
        (key, "not-in-this-room", "wifi", uuid.uuid4().hex, False),
        (key, cids[0], "wifi", retried, False),  # the same beat sent again (a client retry)
        (key, newcomer, "ethernet", uuid.uuid4().hex, True),  # a join in the same call
    ]
    answers = await handle.heartbeats.remote(beats)
    assert [a.get("error") for a in answers] == [None, None, "not_joined", None, None]
    assert answers[0]["event_id"] == answers[3]["event_id"]
    assert {a["state"] for i, a in enumerate(answers) if i != 2} == {"joined"}
    journal = await _journal(runtime, key)
    eids = Counter(event["eid"] for _, event in journal)
    assert eids[retried] == 1
    assert answers[1]["event_id"] in {event_id for event_id, _ in journal}
    joined = [event for event_id, event in journal if event_id == answers[4]["event_id"]]
    assert [(e["type"], e["cid"]) for e in joined] == [("joined", newcomer)]
    after = await runtime.rooms.room_view(key)
    assert after["presence"][cids[1]]["network"] == "cellular"
    assert after["presence"][newcomer]["state"] == "joined"


async def test_concurrent_heartbeats_share_calls_and_each_is_journaled(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    rooms = {f"hb{r}": [f"h{r}{i:03d}" for i in range(40)] for r in range(2)}
    world = await new_exam(client, runtime, rooms, room_capacity=40)
    numbers = [n for ns in rooms.values() for n in ns]
    async with httpx.AsyncClient(
        base_url=runtime.settings.gateway_url, limits=httpx.Limits(max_connections=100), timeout=60
    ) as http:
        fleet = await asyncio.gather(*(joined_candidate(http, world.exam_id, n) for n in numbers))
        room_of = [keys.room_key(world.exam_id, room) for room, ns in rooms.items() for _ in ns]
        room_keys = [keys.room_key(world.exam_id, r) for r in rooms]
        before = {key: await _shard_stats(runtime, key) for key in room_keys}

        async def beat(key: str, headers: httpx.Headers) -> list[tuple[str, str]]:
            acked = []
            for _ in range(3):
                response = await http.post("/v1/me/heartbeat", json={}, headers=headers)
                assert response.status_code == 200, response.text
                assert response.json()["state"] == "joined"
                acked.append((key, response.json()["event_id"]))
            return acked

        beaten = await asyncio.gather(*map(beat, room_of, fleet))
        acked = [acknowledged for each in beaten for acknowledged in each]
        after = {key: await _shard_stats(runtime, key) for key in room_keys}

    assert len(acked) == len(set(acked)) == 3 * len(numbers)
    # Event ids are unique within one room's journal.
    journaled = {
        (key, i)
        for key in room_keys
        for i, e in await _journal(runtime, key)
        if e["type"] == "heartbeat"
    }
    assert set(acked) <= journaled
    shards = {stats["name"]: stats for stats in after.values()}
    beats = sum(s["beats_received"] for s in shards.values()) - sum(
        {b["name"]: b["beats_received"] for b in before.values()}.values()
    )
    calls = sum(s["beat_calls"] for s in shards.values()) - sum(
        {b["name"]: b["beat_calls"] for b in before.values()}.values()
    )
    print(f"{beats} heartbeats in {calls} shard calls")
    assert beats >= len(acked)
    assert calls < beats


async def test_a_room_joining_at_once_shares_shard_calls(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """The morning of the exam: a whole room joins within moments; every candidate is
    admitted, each join journaled once, in fewer shard calls than joins."""
    runtime = runtime_of(app)
    numbers = [f"j{i:03d}" for i in range(40)]
    world = await new_exam(client, runtime, {"jr": numbers}, room_capacity=40)
    key = keys.room_key(world.exam_id, "jr")
    async with httpx.AsyncClient(
        base_url=runtime.settings.gateway_url, limits=httpx.Limits(max_connections=100), timeout=60
    ) as http:
        before = await _shard_stats(runtime, key)
        fleet = await asyncio.gather(*(joined_candidate(http, world.exam_id, n) for n in numbers))
        after = await _shard_stats(runtime, key)
    assert len(fleet) == len(numbers)
    joins = [e for _, e in await _journal(runtime, key) if e["type"] == "joined"]
    assert sorted(Counter(e["cid"] for e in joins).values()) == [1] * len(numbers)
    view = await runtime.rooms.room_view(key)
    assert {p["state"] for p in view["presence"].values()} == {"joined"}
    assert len(view["presence"]) == len(numbers)
    calls = after["beat_calls"] - before["beat_calls"]
    print(f"{len(numbers)} joins in {calls} shard calls")
    assert 0 < calls < len(numbers)
