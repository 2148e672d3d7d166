"""What people write into a room, sealed at rest: help messages, proctors' messages, and
proctors' notes on incidents and face reviews.

A candidate's help message (`help`), a proctor's message (`message`) and a proctor's note
on an incident (`incident`) or on a face review's decision (`face_review`, and the review
record itself) are free text that may hold a name, a phone number, a medical condition.
The gateway seals each such field (`FREE_TEXT`: `text`, `note`) with the exam's data key
(`ROOM_TEXT_PURPOSE`) before the event goes to the room's shard, so the journal, the
shard's state and its snapshots only ever hold the sealed form, under the sealed field's
name (`text_sealed`, `note_sealed`) in place of the clear one. Whoever shows the text to
a person (the room view, the candidate's view, the event stream, the face reviews,
exports and data copies) opens it with `opened`, which puts the field back where it was:
the JSON a client reads is the same as before.

Events journaled before the text was sealed carry it in clear; `opened` leaves them as
they are, so old journals replay and read as they did.
"""

from __future__ import annotations

import logging
from typing import Any

from infra.crypto import DataKeys
from infra.errors import Forbidden

log = logging.getLogger(__name__)

ROOM_TEXT_PURPOSE = "room-text"
SEALED_TEXT = "text_sealed"
# Each free-text field of a room event, and the field that holds it sealed.
FREE_TEXT = {"text": SEALED_TEXT, "note": "note_sealed"}


def is_sealed(record: dict[str, Any]) -> bool:
    return any(name in record for name in FREE_TEXT.values())


async def sealed(data_keys: DataKeys, exam_id: str, event: dict[str, Any]) -> dict[str, Any]:
    """`event` with each free-text field it has sealed under its sealed name, in its place."""
    for clear, hidden in FREE_TEXT.items():
        value = event.get(clear)
        if isinstance(value, str) and value:
            seal = await data_keys.seal_text(exam_id, ROOM_TEXT_PURPOSE, value)
            event = _replaced(event, clear, hidden, seal)
    return event


async def opened(data_keys: DataKeys, exam_id: str, record: dict[str, Any]) -> dict[str, Any]:
    """`record` (an event, a message, a help request or an incident of a room's state) with
    its sealed fields opened back into their clear names, in their places; a record
    without one, as it is.

    A text that does not open (its exam's data key destroyed, or the ciphertext altered)
    reads as null with `<field>_withheld` giving the reason (`text_withheld`), and is logged without
    its content: one such event must not fail a room's whole view, nor cut a proctor's
    event stream at the same event on every reconnection."""
    for clear, hidden in FREE_TEXT.items():
        seal = record.get(hidden)
        if not isinstance(seal, str):
            continue
        try:
            value: str | None = await data_keys.open_text(exam_id, ROOM_TEXT_PURPOSE, seal)
        except Forbidden as exc:
            log.warning("a room text of exam %s does not open: %s", exam_id, exc.reason)
            record = {**_replaced(record, hidden, clear, None), f"{clear}_withheld": exc.reason}
        else:
            record = _replaced(record, hidden, clear, value)
    return record


async def opened_room_view(
    data_keys: DataKeys, exam_id: str, view: dict[str, Any]
) -> dict[str, Any]:
    """A proctor's view of a room (`RoomState.snapshot`) with its messages, its open help
    requests (by candidate) and its incidents (by id) opened."""
    help_ = {cid: await opened(data_keys, exam_id, r) for cid, r in view["help"].items()}
    incidents = {
        eid: await opened(data_keys, exam_id, incident)
        for eid, incident in view["incidents"].items()
    }
    messages = await _messages(data_keys, exam_id, view)
    return {**view, "messages": messages, "help": help_, "incidents": incidents}


async def opened_candidate_view(
    data_keys: DataKeys, exam_id: str, view: dict[str, Any]
) -> dict[str, Any]:
    """A candidate's view of their room (`RoomState.view_for`) with their messages and
    their open help request (or None) opened."""
    request = view["help"]
    help_ = None if request is None else await opened(data_keys, exam_id, request)
    return {**view, "messages": await _messages(data_keys, exam_id, view), "help": help_}


async def _messages(
    data_keys: DataKeys, exam_id: str, view: dict[str, Any]
) -> list[dict[str, Any]]:
    return [await opened(data_keys, exam_id, message) for message in view["messages"]]


def _replaced(record: dict[str, Any], old: str, new: str, value: str | None) -> dict[str, Any]:
    """`record` with field `old` replaced by field `new` holding `value`, in its place."""
    return {(new if k == old else k): (value if k == old else v) for k, v in record.items()}
