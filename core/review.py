"""Review and grading after the exam: each candidate's risk, the reviewers' decisions, the
exam's rubric and the examiners' score sheets.

Risk is read from where each signal is already recorded, never copied: the room's
evidence stream (`keys.room_events_key`) holds incidents (by proctors and the face
monitor), their reviews, face review requests and decisions, and the sweeper's
`disconnected` marks; the face record (`keys.face_record_key`) holds the outcome of the
candidate's last liveness challenge. The score is a sum of points:

| signal                                                  | points                    |
|---------------------------------------------------------|---------------------------|
| incident, by severity (high / medium / low / info)      | 10 / 5 / 2 / 0            |
| face mismatch (an `identity_mismatch` incident)         | 12 (instead of severity)  |
| face review rejected by a proctor                       | 15                        |
| face review requested and not accepted (yet)            | 4                         |
| disconnected time                                       | 1 a minute, at most 30    |
| last liveness challenge failed                          | 6                         |

An incident a proctor dismissed counts nothing: they looked and found nothing. Face
mismatches weigh more than any single severity, since the wrong person sitting the exam
voids it whatever else happened; a rejected face review is a proctor's confirmation of
one. Disconnected time is capped so that a bad network alone ranks below one high
incident plus a few minutes. The queue ranks by score, highest first, then by candidate id
so that pages are stable.

Decisions (`cleared | warning | voided`) and score sheets are personal data about a
candidate; what a reviewer writes in their free text (notes, comments) may name people,
so it is sealed with the exam's data key (as `core.exams` does identity); the rest (who,
when, which decision, which points) is kept clear, keyed by the opaque candidate id, so
that ranking a whole exam opens no ciphertext. Each candidate has one current decision and
its history (bounded: `MAX_DECISIONS`); the gateway journals each decision into the
candidate's room too (`review_decision`), without the note.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from redis.asyncio import Redis

from core import keys
from infra.crypto import DataKeys
from infra.errors import Conflict, InvalidInput
from infra.redis import text

Decision = Literal["cleared", "warning", "voided"]
SEVERITY_POINTS = {"high": 10, "medium": 5, "low": 2, "info": 0}
FACE_MISMATCH_POINTS = 12
FACE_REVIEW_REJECTED_POINTS = 15
FACE_REVIEW_PENDING_POINTS = 4
DISCONNECTED_POINTS_PER_MINUTE = 1
DISCONNECTED_POINTS_MAX = 30
LIVENESS_FAILED_POINTS = 6
WEIGHTS = {
    "incident": SEVERITY_POINTS,
    "face_mismatch": FACE_MISMATCH_POINTS,
    "face_review_rejected": FACE_REVIEW_REJECTED_POINTS,
    "face_review_pending": FACE_REVIEW_PENDING_POINTS,
    "disconnected_minute": DISCONNECTED_POINTS_PER_MINUTE,
    "disconnected_max": DISCONNECTED_POINTS_MAX,
    "liveness_failed": LIVENESS_FAILED_POINTS,
}
# A room's evidence stream is never trimmed; reading it for a review stops here (and says
# so), so that one runaway room cannot hold a gateway's memory.
MAX_ROOM_EVENTS = 100_000
_BATCH = 1000
MAX_DECISIONS = 100  # per candidate: a history longer than this is a loop, not a review
_PRESENT_AGAIN = frozenset({"joined", "left", "ended"})
Event = tuple[str, dict[str, Any]]


@dataclass
class Risk:
    cid: str
    room: str
    score: float = 0.0
    incidents: dict[str, int] = field(default_factory=dict)  # severity -> count
    face_mismatches: int = 0
    face_reviews_rejected: int = 0
    face_reviews_pending: int = 0
    disconnected_seconds: float = 0.0
    liveness_failed: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _disconnections(events: list[Event], until: float) -> list[tuple[float, float]]:
    """(from, to) of each stretch the sweeper marked disconnected, until the candidate
    was back (joined), left or was ended; one still open lasts until `until`."""
    spans: list[tuple[float, float]] = []
    since: float | None = None
    for _, event in events:
        kind, at = event.get("type"), float(event.get("at", 0.0))
        if kind == "disconnected" and since is None:
            since = at
        elif kind in _PRESENT_AGAIN and since is not None:
            spans.append((since, max(since, at)))
            since = None
    if since is not None:
        spans.append((since, max(since, until)))
    return spans


def risk_of(
    cid: str,
    room: str,
    events: list[Event],
    *,
    reviewed: dict[str, str],
    until: float,
    liveness: str | None,
) -> Risk:
    """A candidate's risk from their own events of the room (oldest first) and the room's
    incident reviews (`reviewed`: incident id -> decision); `until` ends a disconnection
    still open, `liveness` is their last challenge's outcome (None: none)."""
    risk = Risk(cid, room, liveness_failed=liveness not in (None, "", "passed"))
    reviews: dict[str, str] = {}
    points = 0.0
    for event_id, event in events:
        kind = event.get("type")
        if kind == "incident" and reviewed.get(event_id) != "dismissed":
            if event.get("incident") == "identity_mismatch":
                risk.face_mismatches += 1
                points += FACE_MISMATCH_POINTS
            else:
                severity = str(event.get("severity", "medium"))
                risk.incidents[severity] = risk.incidents.get(severity, 0) + 1
                points += SEVERITY_POINTS.get(severity, 0)
        elif kind == "face_review_requested":
            reviews.setdefault(str(event.get("review")), "pending")
        elif kind == "face_review":
            reviews[str(event.get("review"))] = str(event.get("decision"))
    risk.face_reviews_rejected = sum(1 for s in reviews.values() if s == "rejected")
    risk.face_reviews_pending = sum(1 for s in reviews.values() if s == "pending")
    points += FACE_REVIEW_REJECTED_POINTS * risk.face_reviews_rejected
    points += FACE_REVIEW_PENDING_POINTS * risk.face_reviews_pending
    risk.disconnected_seconds = round(sum(b - a for a, b in _disconnections(events, until)), 1)
    minutes = risk.disconnected_seconds // 60
    points += min(DISCONNECTED_POINTS_MAX, DISCONNECTED_POINTS_PER_MINUTE * minutes)
    points += LIVENESS_FAILED_POINTS if risk.liveness_failed else 0
    risk.score = points
    return risk


def markers_of(
    events: list[Event],
    *,
    reviewed: dict[str, str],
    until: float,
    liveness: str | None,
    liveness_at: float | None,
) -> list[dict[str, Any]]:
    """What a reviewer jumps to on a session's timeline, in time order: incidents (face
    mismatches apart), face reviews, disconnections (with their length), a failed liveness."""
    markers: list[dict[str, Any]] = []
    for event_id, event in events:
        kind, at = event.get("type"), float(event.get("at", 0.0))
        if kind == "incident":
            mismatch = event.get("incident") == "identity_mismatch"
            markers.append(
                {
                    "id": event_id,
                    "kind": "face_mismatch" if mismatch else "incident",
                    "at": float(event.get("first_seen") or at),
                    "incident": event.get("incident"),
                    "severity": event.get("severity"),
                    "by": event.get("by"),
                    "status": reviewed.get(event_id, "open"),
                }
            )
        elif kind in ("face_review_requested", "face_review"):
            markers.append(
                {
                    "id": event_id,
                    "kind": "face_review",
                    "at": at,
                    "status": event.get("decision", "pending"),
                }
            )
    for start, end in _disconnections(events, until):
        markers.append(
            {"id": f"disc-{start}", "kind": "disconnected", "at": start, "seconds": end - start}
        )
    if liveness not in (None, "", "passed") and liveness_at:
        markers.append(
            {"id": "liveness", "kind": "liveness_failed", "at": liveness_at, "reason": liveness}
        )
    return sorted(markers, key=lambda m: float(m["at"]))


@dataclass
class RoomJournal:
    """What a review reads of a room's evidence stream."""

    events: dict[str, list[Event]]  # candidate id -> their events, oldest first
    reviewed: dict[str, str]  # incident id -> a proctor's decision (the last one)
    truncated: bool  # cut at `MAX_ROOM_EVENTS`


async def room_journal(
    redis: Redis, exam_id: str, room: str, cids: set[str] | None = None
) -> RoomJournal:
    """The evidence stream of a room, per candidate (only `cids` when given). Incident
    reviews name the incident, not its candidate, so they are kept for every incident."""
    key = keys.room_events_key(keys.room_key(exam_id, room))
    cursor, read = "-", 0
    journal = RoomJournal({}, {}, truncated=True)
    while read < MAX_ROOM_EVENTS:
        entries: Any = await redis.xrange(key, min=cursor, max="+", count=_BATCH)
        for raw_id, fields in entries:
            event = json.loads(fields[b"e"])
            cid = event.get("cid")
            if event.get("type") == "incident_reviewed":
                journal.reviewed[str(event["incident"])] = str(event["decision"])
            elif cid is not None and (cids is None or cid in cids):
                journal.events.setdefault(str(cid), []).append((text(raw_id), event))
        read += len(entries)
        if len(entries) < _BATCH:
            journal.truncated = False
            break
        cursor = f"({text(entries[-1][0])}"
    return journal


async def liveness_of(redis: Redis, exam_id: str, cids: list[str]) -> dict[str, tuple[str, float]]:
    """Each candidate's last liveness outcome and its time, as the face checks record it."""
    async with redis.pipeline(transaction=False) as pipe:
        for cid in cids:
            pipe.hmget(keys.face_record_key(exam_id, cid), ["liveness", "liveness_at"])
        rows = await pipe.execute()
    return {
        cid: (text(outcome), float(at or 0))
        for cid, (outcome, at) in zip(cids, rows, strict=True)
        if outcome is not None
    }


class ReviewStore:
    """Rubrics, decisions and score sheets of exams, in Redis; free text sealed."""

    def __init__(self, redis: Redis, data_keys: DataKeys) -> None:
        self.redis = redis
        self.keys = data_keys

    # -- rubric ---------------------------------------------------------------------

    async def rubric(self, exam_id: str) -> list[dict[str, Any]] | None:
        raw = await self.redis.get(keys.review_rubric_key(exam_id))
        return list(json.loads(raw)["criteria"]) if raw else None

    async def set_rubric(self, exam_id: str, criteria: list[dict[str, Any]], by: str) -> None:
        ids = [c["id"] for c in criteria]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise InvalidInput(
                "criterion ids must be unique", reason="duplicate_criterion", criteria=duplicates
            )
        body = {"criteria": criteria, "by": by, "at": time.time()}
        await self.redis.set(keys.review_rubric_key(exam_id), json.dumps(body))

    # -- decisions ------------------------------------------------------------------

    async def decide(
        self, exam_id: str, cid: str, decision: Decision, note: str, by: str, event_id: str
    ) -> dict[str, Any]:
        """Record `decision` as the candidate's current one and append it to their history."""
        history = keys.review_history_key(exam_id, cid)
        if await self.redis.llen(history) >= MAX_DECISIONS:
            raise Conflict(
                f"a candidate has at most {MAX_DECISIONS} review decisions",
                reason="too_many_decisions",
            )
        record = {
            "decision": decision,
            "by": by,
            "at": time.time(),
            "event_id": event_id,
            "note": await self.keys.seal_text(exam_id, f"review:note:{cid}", note),
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.review_decisions_key(exam_id), cid, json.dumps(record))
            pipe.rpush(history, json.dumps(record))
            await pipe.execute()
        return await self._opened(exam_id, cid, record)

    async def decisions(self, exam_id: str) -> dict[str, dict[str, Any]]:
        """Every candidate's current decision, notes left sealed (out)."""
        raw = await self.redis.hgetall(keys.review_decisions_key(exam_id))
        decided = {text(cid): json.loads(value) for cid, value in raw.items()}
        for record in decided.values():
            record.pop("note", None)
        return decided

    async def history(self, exam_id: str, cid: str) -> list[dict[str, Any]]:
        """The candidate's decisions, oldest first, notes opened."""
        raw = await self.redis.lrange(keys.review_history_key(exam_id, cid), 0, MAX_DECISIONS)
        return [await self._opened(exam_id, cid, json.loads(r)) for r in raw]

    async def _opened(self, exam_id: str, cid: str, record: dict[str, Any]) -> dict[str, Any]:
        note = await self.keys.open_text(exam_id, f"review:note:{cid}", record["note"])
        return {**record, "note": note}

    # -- score sheets -----------------------------------------------------------------

    async def score(
        self,
        exam_id: str,
        cid: str,
        examiner: str,
        points: dict[str, float],
        comment: str,
    ) -> dict[str, Any]:
        """Check `points` against the exam's rubric (every criterion, none other, each in
        0..max) and keep them as `examiner`'s sheet for the candidate; nothing is stored
        when a check fails."""
        criteria = await self.rubric(exam_id)
        if criteria is None:
            raise Conflict("the exam has no rubric yet", reason="no_rubric")
        maxima = {str(c["id"]): float(c["max_points"]) for c in criteria}
        unknown = sorted(set(points) - set(maxima))
        if unknown:
            raise InvalidInput(
                "no such criterion in the rubric", reason="unknown_criterion", criteria=unknown
            )
        missing = sorted(set(maxima) - set(points))
        if missing:
            raise InvalidInput(
                "every criterion of the rubric needs points",
                reason="missing_criterion",
                criteria=missing,
            )
        out = sorted(c for c, p in points.items() if not 0 <= p <= maxima[c])
        if out:
            raise InvalidInput(
                "points must be between 0 and the criterion's maximum",
                reason="score_out_of_range",
                criteria=out,
            )
        sheet = {
            "examiner": examiner,
            "points": points,
            "total": sum(points.values()),
            "at": time.time(),
            "comment": await self.keys.seal_text(exam_id, f"review:comment:{cid}", comment),
        }
        await self.redis.hset(
            keys.review_scores_key(exam_id), f"{cid}/{examiner}", json.dumps(sheet)
        )
        return {**sheet, "comment": comment}

    async def sheets(self, exam_id: str, cid: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """Score sheets by candidate (of one candidate with `cid`), comments opened."""
        key = keys.review_scores_key(exam_id)
        if cid is None:
            raw = list((await self.redis.hgetall(key)).items())
        else:
            raw = [kv async for kv in self.redis.hscan_iter(key, match=f"{cid}/*")]
        found: dict[str, list[dict[str, Any]]] = {}
        for name, value in sorted((text(k), v) for k, v in raw):
            owner = name.split("/", 1)[0]
            sheet = json.loads(value)
            opened = await self.keys.open_text(exam_id, f"review:comment:{owner}", sheet["comment"])
            found.setdefault(owner, []).append({**sheet, "comment": opened})
        return found
