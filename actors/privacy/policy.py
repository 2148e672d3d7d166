"""What is due for deletion: an exam's retention rules applied to what its rooms journaled.

Each rule names a policy class, a trigger and a duration. The trigger time is

    exam_end        the exam's `ends_at`
    fixed_date      the rule's `fixed_date`
    candidate_exit  the candidate's `left` or `ended` event in the room journal,
                    and at the latest the exam's end (a candidate who never left
                    is treated as leaving when the exam ends)

Policy classes map to storage classes: `photos` covers photos and whiteboard
snapshots, `face` covers templates and evidence frames. Client logs are kept
per exam, not per candidate, so `candidate_exit` on logs means the exam's end.
Room timelines (journals in Redis) go when every candidate of the room is due.
The subjects are the rooms' rosters and the candidates removed from them (journaled
`candidate_removed`, their exit): off the roster, a removed candidate's recordings,
face records and uploads would otherwise wait for the exam record's rule.
Identity (the candidate's record in Redis, sealed roster fields included), consent
records, rights requests and the exam record are classes too; an exam whose rules
leave them out gets their default periods (`core.exam.redis_retention_defaults`).
A data-subject deletion request is one more clause, due at the exam's end.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from redis.asyncio import Redis

from core import keys
from core.exam import Exam, RetentionRule, redis_retention_defaults
from infra.redis import text
from infra.regional import RegionalStore

STORAGE_CLASSES: dict[str, tuple[str, ...]] = {
    "recordings": ("recordings",),
    "photos": ("photos", "whiteboards"),
    "face": ("face", "evidence"),
    "logs": ("logs",),
    "timelines": ("timelines",),
    "identity": ("identity",),
    "consents": ("consents",),
    "requests": ("requests",),
    "exam_record": ("records",),
}
# Classes kept per exam, not per candidate: `candidate_exit` means the exam's end for them.
EXAM_LEVEL = ("logs", "consents", "requests", "records")
# What a data-subject erasure covers: the candidate's own objects (logs are pseudonymous,
# timelines belong to the room and go with it).
SUBJECT_CLASSES = ("recordings", "photos", "whiteboards", "face", "evidence")
ALL_SUBJECTS = "*"
_EXIT_EVENTS = ("left", "ended", "candidate_removed")
_JOURNAL_PAGE = 1000
_MAX_JOURNAL_PAGES = 1000
_SCAN_ROUNDS = 100_000


@dataclass(frozen=True)
class Due:
    """One group of data that is due: a storage class of an exam, for one subject or all."""

    exam: str
    policy_class: str
    storage_class: str
    subject: str  # a candidate id, a room (timelines), or `*`
    clause: str
    due_at: float

    @property
    def group_id(self) -> str:
        return f"{self.exam}|{self.storage_class}|{self.subject}"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Due:
        values: dict[str, Any] = json.loads(raw)
        return cls(**values)


def _ts(moment: datetime) -> float:
    return moment.timestamp()


def clause_text(index: int, rule: RetentionRule) -> str:
    when = rule.fixed_date.isoformat() if rule.fixed_date else rule.trigger
    return f"retention[{index}]: {rule.data_class} {when} + {rule.after_seconds}s"


async def room_exits(redis: Redis, exam_id: str, room: str) -> tuple[dict[str, float], set[str]]:
    """When each candidate of a room last left, was ended or removed, and who was removed
    from it, from the room's journal."""
    exits: dict[str, float] = {}
    removed: set[str] = set()
    cursor = "-"
    for _ in range(_MAX_JOURNAL_PAGES):
        entries: Any = await redis.xrange(
            keys.room_events_key(f"{exam_id}/{room}"), min=cursor, max="+", count=_JOURNAL_PAGE
        )
        for raw_id, fields in entries:
            cursor = f"({text(raw_id)}"
            event = json.loads(fields[b"e"])
            if event.get("type") in _EXIT_EVENTS and event.get("cid"):
                exits[str(event["cid"])] = float(event["at"])
                if event["type"] == "candidate_removed":
                    removed.add(str(event["cid"]))
            elif event.get("type") in ("joined", "readmitted") and event.get("cid"):
                # Came back, or may: a readmitted candidate who has not rejoined yet is
                # not gone, and their data is not swept by a `candidate_exit` rule.
                exits.pop(str(event["cid"]), None)
        if len(entries) < _JOURNAL_PAGE:
            break
    return exits, removed


@dataclass
class ExamFacts:
    exam: Exam
    rooms: dict[str, list[str]]  # room -> candidate ids: its roster and those removed
    exits: dict[str, float]  # candidate id -> exit time
    erasures: dict[str, str]  # candidate id -> request id


async def exam_facts(redis: Redis, exam: Exam) -> ExamFacts:
    rooms: dict[str, list[str]] = {}
    exits: dict[str, float] = {}
    for room in sorted(text(r) for r in await redis.hkeys(keys.exam_rooms_key(exam.id))):
        members = await redis.smembers(keys.room_roster_key(exam.id, room))
        left, removed = await room_exits(redis, exam.id, room)
        exits.update(left)
        rooms[room] = sorted({text(m) for m in members} | removed)
    raw = await redis.hgetall(keys.privacy_erasures_key(exam.id))
    erasures = {
        text(cid): str(json.loads(value)["id"])
        for cid, value in raw.items()
        if json.loads(value).get("status") != "done"
    }
    return ExamFacts(exam, rooms, exits, erasures)


def due_groups(facts: ExamFacts, now: float) -> list[Due]:
    """Every group of the exam that is due at `now` under its rules and erasure requests."""
    exam, found = facts.exam, []
    end = _ts(exam.ends_at)
    for index, rule in enumerate(rules_of(exam)):
        clause = clause_text(index, rule)
        for storage in STORAGE_CLASSES[rule.data_class]:
            found += _rule_groups(facts, rule, storage, clause, now, end)
    if now >= end:
        for cid, request in sorted(facts.erasures.items()):
            found += erasure_groups(exam, cid, request)
    return found


def rules_of(exam: Exam) -> list[RetentionRule]:
    """The exam's rules, and the default ones of the classes its rules leave out."""
    named = {rule.data_class for rule in exam.retention}
    return exam.retention + [r for r in redis_retention_defaults() if r.data_class not in named]


def erasure_groups(exam: Exam, cid: str, request: str) -> list[Due]:
    """The groups one candidate's deletion request makes due (once the exam has ended)."""
    end = _ts(exam.ends_at)
    return [
        Due(exam.id, "erasure", storage, cid, f"deletion request {request}", end)
        for storage in SUBJECT_CLASSES
    ]


def _rule_groups(
    facts: ExamFacts, rule: RetentionRule, storage: str, clause: str, now: float, end: float
) -> list[Due]:
    exam, after = facts.exam, rule.after_seconds
    # When everything of the class is due: a fixed date, or the exam's end (which also
    # bounds a candidate exit: a candidate who never left leaves when the exam ends).
    start = _ts(rule.fixed_date) if rule.fixed_date is not None else end
    if now >= start + after:
        subjects = list(facts.rooms) if storage == "timelines" else [ALL_SUBJECTS]
        return [Due(exam.id, rule.data_class, storage, s, clause, start + after) for s in subjects]
    if rule.trigger != "candidate_exit" or storage in EXAM_LEVEL:
        return []
    if storage == "timelines":
        return [
            Due(exam.id, rule.data_class, storage, room, clause, left + after)
            for room, cids in facts.rooms.items()
            if cids
            and all(c in facts.exits for c in cids)
            and now >= (left := max(facts.exits[c] for c in cids)) + after
        ]
    return [
        Due(exam.id, rule.data_class, storage, cid, clause, left + after)
        for cid, left in sorted(facts.exits.items())
        if now >= left + after
    ]


async def region_exams(redis: Redis, regional: RegionalStore, region: str) -> list[str]:
    """Exams of a region: those with objects in its bucket and those in Redis."""
    found = set(await regional.exams_in(region))
    cursor: int = 0
    for _ in range(_SCAN_ROUNDS):
        cursor, batch = await redis.scan(cursor, match=keys.EXAMS, count=1000)
        found.update(parts[2] for k in batch if len(parts := text(k).split(":")) == 3)
        if cursor == 0:
            break
    return sorted(found)
