"""Help requests folded into a room's state: one open request per candidate, settled by the
candidate lowering it or a proctor answering them, and still open after a snapshot and the
replay of the journal after it (a console that opens late or reconnects sees them). Texts
arrive sealed (`core.room_text`) and stay sealed; a journal that mixes them with clear texts
written before they were sealed replays the same."""

from __future__ import annotations

import json
from typing import Any

from actors.rooms.state import MAX_HELP_TEXT, RoomState
from core.room_text import SEALED_TEXT

A, B = "a" * 16, "b" * 16


def event(type_: str, at: float, **fields: Any) -> dict[str, Any]:
    return {"type": type_, "at": at, **fields}


def test_one_open_request_per_candidate_settled_by_lowering_or_an_answer() -> None:
    room = RoomState("ex1/r1")
    room.apply("1-0", event("help", 10.0, cid=A, kind="hand", text=None))
    room.apply("2-0", event("help", 11.0, cid=A, kind="message", text="x" * 5000))
    room.apply("3-0", event("help", 12.0, cid=A, kind="hand", text=None))
    room.apply("4-0", event("help", 13.0, cid=B, kind="nonsense", text=""))
    assert set(room.help) == {A, B}
    assert room.help[A]["id"] == "3-0"
    assert room.help[A]["kind"] == "hand"
    assert room.help[A]["text"] == "x" * MAX_HELP_TEXT  # the message stays, cut
    assert room.help[A]["since"] == 10.0
    assert room.help[B] == {
        "id": "4-0", "cid": B, "kind": "hand", "text": None, "at": 13.0, "since": 13.0
    }  # fmt: skip
    assert room.view_for(A)["help"]["id"] == "3-0"

    room.apply("5-0", event("message", 14.0, proctor="p", to=None, text="all of you"))
    assert set(room.help) == {A, B}  # a message to the whole room answers nobody
    room.apply("6-0", event("message", 15.0, proctor="p", to=A, text="coming"))
    assert set(room.help) == {B}
    room.apply("7-0", event("help_lowered", 16.0, cid=B))
    room.apply("8-0", event("help_lowered", 17.0, cid=B))  # twice is harmless
    assert room.help == {}
    assert room.view_for(A)["help"] is None


def test_open_requests_survive_a_snapshot_and_the_replay_after_it() -> None:
    journal = [
        ("1-0", event("help", 10.0, cid=A, kind="message", text="我的题目缺页")),
        ("2-0", event("help", 11.0, cid=B, kind="hand", text=None)),
        ("3-0", event("message", 12.0, proctor="p", to=B, text="来了")),
        ("4-0", event("help", 13.0, cid=B, kind="hand", text=None)),
        ("5-0", event("help_lowered", 14.0, cid=A)),
    ]
    live = RoomState("ex1/r1")
    for event_id, each in journal[:3]:
        live.apply(event_id, each)
    # The shard keeps its snapshot as JSON in Redis.
    stored = json.loads(json.dumps(live.snapshot()))
    restored = RoomState.from_snapshot(stored)
    assert restored.help == {A: live.help[A]}
    for event_id, each in journal[3:]:
        live.apply(event_id, each)
        restored.apply(event_id, each)
    assert restored.snapshot() == live.snapshot()
    assert set(restored.help) == {B}


def test_a_snapshot_from_before_help_requests_restores_with_none_open() -> None:
    old = RoomState("ex1/r1").snapshot()
    del old["help"]
    assert RoomState.from_snapshot(old).help == {}


def test_sealed_texts_stay_sealed_beside_clear_ones_from_before() -> None:
    seal = "ZWQx" * 300  # what the gateway sends: base64, never cut (it is no text)
    journal = [
        ("1-0", event("help", 10.0, cid=A, kind="message", text="in clear, from before")),
        ("2-0", event("help", 11.0, cid=B, kind="message", **{SEALED_TEXT: seal})),
        ("3-0", event("help", 12.0, cid=B, kind="hand", text=None)),
        ("4-0", event("message", 13.0, proctor="p", to=None, **{SEALED_TEXT: "c2Vh"})),
        ("5-0", event("help", 14.0, cid=A, kind="hand", text=None)),
    ]
    room = RoomState("ex1/r1")
    for event_id, each in journal[:3]:
        room.apply(event_id, each)
    assert room.help[B] == {
        "id": "3-0", "cid": B, "kind": "hand", SEALED_TEXT: seal, "at": 12.0, "since": 11.0
    }  # fmt: skip  # the hand keeps the sealed message, in the text's place
    restored = RoomState.from_snapshot(json.loads(json.dumps(room.snapshot())))
    for event_id, each in journal[3:]:
        room.apply(event_id, each)
        restored.apply(event_id, each)
    assert restored.snapshot() == room.snapshot()
    assert room.help[A]["text"] == "in clear, from before"
    assert SEALED_TEXT not in room.help[A]
    assert room.view_for(B)["messages"][0][SEALED_TEXT] == "c2Vh"
