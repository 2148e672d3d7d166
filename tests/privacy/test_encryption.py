"""Personal data at rest: sealed objects, sealed identity fields, sealed room free text (help
requests and proctors' messages), and master-key rotation."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import secrets
import uuid
import zipfile
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from actors.rooms.journal import SNAPSHOT_EVERY
from api.runtime import Runtime
from core import keys
from core.keys import STATE_NAMES as NAMES
from core.room_text import FREE_TEXT, ROOM_TEXT_PURPOSE, SEALED_TEXT, is_sealed
from infra.crypto import DataKeys
from infra.errors import ConfigError
from infra.keyring import RotatingDataKeys, rotate_all
from infra.redis import blob, text
from infra.regional import RegionalStore
from infra.settings import Settings
from tests.privacy.conftest import raw_object, runtime_of
from tests.support.factories import joined_candidate, new_exam
from tests.support.journal import room_journal
from tests.support.sse import Event, read_events

TEMPLATE = bytes(range(256)) * 2


async def _redis_values(runtime: Any, exam_id: str) -> list[bytes]:
    """Every value Redis holds under the exam's keys, whatever the type."""
    values: list[bytes] = []
    async for key in runtime.redis.scan_iter(match=keys.exam_key(exam_id) + "*", count=500):
        kind = text(await runtime.redis.type(key))
        if kind == "string":
            values.append(await runtime.redis.get(key))
        elif kind == "hash":
            values += list((await runtime.redis.hgetall(key)).values())
        elif kind == "set":
            values += list(await runtime.redis.smembers(key))
        elif kind == "stream":
            values += [v for _, fields in await runtime.redis.xrange(key) for v in fields.values()]
    return values


async def test_templates_photos_and_identity_fields_are_not_readable_at_rest(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["7319264"]}, with_proctors=False)
    cid = world.candidate_ids["7319264"]
    stored = await runtime.regional.put(world.exam_id, "face", cid, "template.bin", TEMPLATE)
    raw = await raw_object(runtime.stores, "cn-north", stored.key)
    assert TEMPLATE[:64] not in raw
    assert raw[:3] == b"ed1"
    assert await runtime.regional.get(world.exam_id, stored.key) == TEMPLATE
    values = await _redis_values(runtime, world.exam_id)
    assert values
    assert not [v for v in values if b"7319264" in v or b"Candidate" in v]


async def _all_of_redis(redis: Redis) -> list[bytes]:
    """Every key, field and value Redis holds, whatever the type."""
    found: list[bytes | str] = []
    async for key in redis.scan_iter(count=1000):
        found.append(key)
        kind = text(await redis.type(key))
        if kind == "string":
            found.append(blob(await redis.get(key)))
        elif kind == "hash":
            found += [part for pair in (await redis.hgetall(key)).items() for part in pair]
        elif kind == "set":
            found += list(await redis.smembers(key))
        elif kind == "zset":
            members: Any = await redis.zrange(key, 0, -1)
            found += list(members)
        elif kind == "list":
            found += list(await redis.lrange(key, 0, -1))
        elif kind == "stream":
            entries: Any = await redis.xrange(key)
            found += [part for _, fields in entries for pair in fields.items() for part in pair]
    return [blob(part) for part in found]


@dataclass
class OneRoom:
    """An exam with one room, its proctor, and one candidate who has joined it."""

    exam: str
    cid: str
    proctor: httpx.Headers
    base: str  # the room's API path
    room: str  # `keys.room_key`
    candidate: httpx.Headers
    organiser: httpx.Headers


async def one_room(client: httpx.AsyncClient, runtime: Runtime, number: str) -> OneRoom:
    world = await new_exam(client, runtime, {"r1": [number]})
    exam = world.exam_id
    return OneRoom(
        exam, world.candidate_ids[number], world.proctors["r1"], f"/v1/exams/{exam}/rooms/r1",
        keys.room_key(exam, "r1"), await joined_candidate(client, exam, number), world.organiser,
    )  # fmt: skip


async def test_what_people_write_in_a_room_is_sealed_at_rest_and_reads_as_before(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """What a candidate and a proctor write into a room (a name, a phone number, a medical
    condition) is nowhere in Redis in clear: not in the journal, the room's snapshot or any
    other key; the proctor's view and event stream, the candidate's view, an authority's
    export and the candidate's copy of their data show it as written."""
    runtime = runtime_of(app)
    at = await one_room(client, runtime, "7402")
    exam, cid, proctor, base, room, candidate = (
        at.exam, at.cid, at.proctor, at.base, at.room, at.candidate,
    )  # fmt: skip
    marker = f"zq{secrets.token_hex(6)}"  # in every text below, and nowhere else
    asked = f"I am Li Wei, 13800138000, I have asthma {marker}-help"
    notice = f"Ten minutes left, everyone {marker}-notice"
    answer = f"Li Wei, keep the inhaler on your desk {marker}-answer"
    noted = f"Li Wei looked at a phone under the desk {marker}-note"

    sent = await client.post(
        "/v1/me/help", json={"kind": "message", "text": asked}, headers=candidate
    )
    assert sent.status_code == 201, sent.text
    told = await client.post(f"{base}/messages", json={"text": notice}, headers=proctor)
    assert told.status_code == 201, told.text
    incident = {"candidate": cid, "type": "phone_use", "note": noted}
    raised = await client.post(f"{base}/incidents", json=incident, headers=proctor)
    assert raised.status_code == 201, raised.text
    view = (await client.get(base, headers=proctor)).json()
    assert view["incidents"][raised.json()["event_id"]]["note"] == noted
    assert view["help"][cid] == {
        "id": sent.json()["event_id"],
        "cid": cid,
        "kind": "message",
        "text": asked,
        "at": view["help"][cid]["at"],
        "since": view["help"][cid]["since"],
    }
    assert [(m["proctor"], m["to"], m["text"]) for m in view["messages"]] == [
        (view["messages"][0]["proctor"], None, notice)
    ]
    # Past `SNAPSHOT_EVERY` events the shard saves the room's state: the open request and
    # the notice are in it.
    beats = [
        runtime.rooms.heartbeat(room, cid, "wifi", f"snap-{n}-{uuid.uuid4().hex}")
        for n in range(SNAPSHOT_EVERY)
    ]
    await asyncio.gather(*beats)
    snapshot = json.loads(blob(await runtime.redis.get(keys.room_snapshot_key(room))))
    assert SEALED_TEXT in snapshot["help"][cid]
    assert [SEALED_TEXT in m for m in snapshot["messages"]] == [True]
    answered = await client.post(
        f"{base}/messages", json={"to": cid, "text": answer}, headers=proctor
    )
    assert answered.status_code == 201, answered.text

    mine = (await client.get("/v1/me/room", headers=candidate)).json()
    assert [(m["to"], m["text"]) for m in mine["messages"]] == [(None, notice), (cid, answer)]
    assert mine["help"] is None  # the answer settled the request
    view = (await client.get(base, headers=proctor)).json()
    assert [m["text"] for m in view["messages"]] == [notice, answer]
    assert view["help"] == {}

    def both_messages(events: list[Event]) -> bool:
        return sum(e.type == "message" for e in events) == 2

    streamed = await read_events(client, f"{base}/events", proctor, until=both_messages)
    helps = [e.data for e in streamed if e.type == "help"]
    assert [(h["cid"], h["kind"], h["text"]) for h in helps] == [(cid, "message", asked)]
    messages = [e.data for e in streamed if e.type == "message"]
    assert [(m["to"], m["text"]) for m in messages] == [(None, notice), (cid, answer)]
    assert [e.data["note"] for e in streamed if e.type == "incident"] == [noted]
    assert not [e for e in streamed if is_sealed(e.data)]

    body = {"reference": "POLICE-11", "reason": "a complaint about the room"}
    made = await client.post(f"/v1/exams/{exam}/exports", json=body, headers=at.organiser)
    assert made.status_code == 201, made.text
    archive = await client.get(made.json()["url"], headers=at.organiser)
    assert archive.status_code == 200, archive.text
    with zipfile.ZipFile(io.BytesIO(archive.content)) as package:
        lines = package.read("timelines/r1.jsonl").decode().splitlines()
    timeline = [json.loads(line) for line in lines]
    assert [e["text"] for e in timeline if e["type"] in ("help", "message")] == [
        asked,
        notice,
        answer,
    ]
    assert [e["note"] for e in timeline if e["type"] == "incident"] == [noted]
    copy = await client.get("/v1/me/data", headers=candidate)
    assert copy.status_code == 200, copy.text
    assert [e["text"] for e in copy.json()["timeline"] if e["type"] == "help"] == [asked]

    # In Redis: the sealed form only, which the exam's key opens.
    leaks = [v for v in await _all_of_redis(runtime.redis) if marker.encode() in v]
    assert leaks == []
    journaled = [
        e for _, e in await room_journal(runtime.redis, room) if e["type"] in ("help", "message")
    ]
    assert ["text" in e for e in journaled] == [False, False, False]
    opened = [
        await runtime.exams.keys.open_text(exam, ROOM_TEXT_PURPOSE, e[SEALED_TEXT])
        for e in journaled
    ]
    assert opened == [asked, notice, answer]
    assert all(base64.b64decode(e[SEALED_TEXT])[:3] == b"ed1" for e in journaled)
    (incident_journaled,) = [
        e for _, e in await room_journal(runtime.redis, room) if e["type"] == "incident"
    ]
    assert "note" not in incident_journaled
    sealed_note = incident_journaled[FREE_TEXT["note"]]
    assert await runtime.exams.keys.open_text(exam, ROOM_TEXT_PURPOSE, sealed_note) == noted


async def test_room_text_journaled_in_clear_before_it_was_sealed_still_reads(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """Events journaled before the text was sealed (clear `text`) read as they did, beside
    sealed ones: in the proctor's view and event stream and in the candidate's view."""
    runtime = runtime_of(app)
    at = await one_room(client, runtime, "7403")
    cid, proctor, base, room, candidate = at.cid, at.proctor, at.base, at.room, at.candidate
    # As the help and message routes journaled them before.
    old: list[dict[str, Any]] = [
        {"type": "help", "cid": cid, "kind": "message", "text": "old: page three is missing"},
        {"type": "message", "proctor": "p-old", "to": None, "text": "old: pens down at noon"},
    ]
    for event in old:
        await runtime.rooms.append(room, event)
    view = (await client.get(base, headers=proctor)).json()
    assert view["help"][cid]["text"] == "old: page three is missing"
    raised = await client.post("/v1/me/help", json={"kind": "hand"}, headers=candidate)
    assert raised.status_code == 201, raised.text
    view = (await client.get(base, headers=proctor)).json()
    assert view["help"][cid]["text"] == "old: page three is missing"  # the hand keeps it
    sent = await client.post(
        f"{base}/messages", json={"to": cid, "text": "new: coming"}, headers=proctor
    )
    assert sent.status_code == 201, sent.text
    mine = (await client.get("/v1/me/room", headers=candidate)).json()
    assert [m["text"] for m in mine["messages"]] == ["old: pens down at noon", "new: coming"]

    def answered(events: list[Event]) -> bool:
        return sum(e.type == "message" for e in events) == 2

    streamed = await read_events(client, f"{base}/events", proctor, until=answered)
    assert [(e.type, e.data.get("text")) for e in streamed if e.type in ("help", "message")] == [
        ("help", "old: page three is missing"),
        ("message", "old: pens down at noon"),
        ("help", None),
        ("message", "new: coming"),
    ]


async def test_a_room_text_that_does_not_open_is_withheld_not_fatal(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """One sealed text that does not open (altered, or its key destroyed) reads as withheld
    in the views and the event stream, and the room's other texts still read."""
    runtime = runtime_of(app)
    at = await one_room(client, runtime, "7404")
    exam, proctor, base, candidate = at.exam, at.proctor, at.base, at.candidate
    sealed = bytearray(
        base64.b64decode(await runtime.exams.keys.seal_text(exam, ROOM_TEXT_PURPOSE, "x" * 20))
    )
    sealed[-1] ^= 1  # the tag no longer matches
    altered = base64.b64encode(bytes(sealed)).decode()
    await runtime.rooms.append(
        at.room, {"type": "message", "proctor": "p", "to": None, SEALED_TEXT: altered}
    )
    sent = await client.post(f"{base}/messages", json={"text": "still here"}, headers=proctor)
    assert sent.status_code == 201, sent.text

    view = await client.get(base, headers=proctor)
    assert view.status_code == 200, view.text
    expected = [(None, "bad_ciphertext"), ("still here", None)]
    assert [(m["text"], m.get("text_withheld")) for m in view.json()["messages"]] == expected
    mine = (await client.get("/v1/me/room", headers=candidate)).json()
    assert [(m["text"], m.get("text_withheld")) for m in mine["messages"]] == expected

    def answered(events: list[Event]) -> bool:
        return sum(e.type == "message" for e in events) == 2

    streamed = await read_events(client, f"{base}/events", proctor, until=answered)
    messages = [e.data for e in streamed if e.type == "message"]
    assert [(m["text"], m.get("text_withheld")) for m in messages] == expected


async def test_rotating_the_master_key_keeps_old_data_readable(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    settings = runtime.settings
    old, new = settings.master_key_bytes(), os.urandom(32)
    world = await new_exam(client, runtime, {"r1": ["1001"]}, with_proctors=False)
    cid = world.candidate_ids["1001"]
    stored = await runtime.regional.put(world.exam_id, "photos", cid, "sheet.png", b"answers")

    def store(keys: DataKeys) -> RegionalStore:
        return RegionalStore(runtime.stores, keys, runtime.redis)

    with pytest.raises(ConfigError, match="master key"):
        await store(DataKeys(runtime.redis, new, NAMES)).get(world.exam_id, stored.key)
    # Deployed with the new key and the old one as previous: old data reads before rotation.
    rotated = RotatingDataKeys(runtime.redis, new, [old], NAMES)
    assert await store(rotated).get(world.exam_id, stored.key) == b"answers"
    report = await rotate_all(rotated, runtime.redis)
    try:
        assert report.exams >= 1
        # After the rotation the new key alone opens everything, the old one nothing.
        assert (
            await store(DataKeys(runtime.redis, new, NAMES)).get(world.exam_id, stored.key)
            == b"answers"
        )
        with pytest.raises(ConfigError):
            await store(DataKeys(runtime.redis, old, NAMES)).get(world.exam_id, stored.key)
        written = await store(RotatingDataKeys(runtime.redis, new, [], NAMES)).put(
            world.exam_id, "photos", cid, "later.png", b"later"
        )
        assert await store(rotated).get(world.exam_id, written.key) == b"later"
    finally:
        # Give the session's gateway its key back: rotate every data key to the old one.
        await rotate_all(RotatingDataKeys(runtime.redis, old, [new], NAMES), runtime.redis)
    assert (
        await store(DataKeys(runtime.redis, old, NAMES)).get(world.exam_id, stored.key)
        == b"answers"
    )


def test_previous_master_keys_come_from_settings() -> None:
    keys = [base64.urlsafe_b64encode(os.urandom(32)).decode() for _ in range(2)]
    settings = Settings(data_master_keys_previous=",".join(keys))
    assert [base64.urlsafe_b64encode(k).decode() for k in settings.previous_master_keys()] == keys
    with pytest.raises(ValueError, match="32-byte"):
        Settings(data_master_keys_previous="c2hvcnQ=").previous_master_keys()
