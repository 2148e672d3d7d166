"""Exams, candidates, rosters and consent records in Redis.

Identity fields (name, date of birth, candidate number, guardian reference) are
sealed with the exam's data key before they reach Redis; keys and URLs use an
opaque candidate id, an HMAC of exam and candidate number.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import WatchError

from core import keys
from core.exam import Action, Exam, ExamSpec, RosterReport, RosterRow, Schedule
from core.roster import ParsedRoster
from infra.crypto import DataKeys
from infra.errors import Conflict, InvalidInput, NotFound
from infra.redis import blob, text
from infra.settings import Settings


@dataclass(frozen=True)
class Candidate:
    exam: str
    cid: str
    room: str
    minor: bool
    has_guardian_consent: bool
    consent_version: str | None
    # The schedule's per-candidate marks: an accommodation's extra minutes, a first join
    # (a candidate who joined in time may come back after the late cut-off), and a
    # proctor's readmission (which lets them join late).
    extra_minutes: int = 0
    joined: bool = False
    admitted: bool = False


def _age_on(born: date, day: date) -> int:
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


class ExamRegistry:
    def __init__(self, settings: Settings, redis: Redis, keys: DataKeys) -> None:
        self.settings = settings
        self.redis = redis
        self.keys = keys
        self._pseudonym = settings.pseudonym_key.get_secret_value().encode()

    def candidate_id(self, exam_id: str, candidate_no: str) -> str:
        message = f"candidate\x00{exam_id}\x00{candidate_no}".encode()
        return hmac.new(self._pseudonym, message, hashlib.sha256).hexdigest()[:24]

    # -- exams ---------------------------------------------------------------

    async def create(self, spec: ExamSpec, organiser: str) -> Exam:
        if spec.region not in self.settings.regions:
            raise InvalidInput(f"unknown region {spec.region!r}", reason="unknown_region")
        exam = Exam(**spec.model_dump(), organiser=organiser)
        created = await self.redis.set(keys.exam_key(exam.id), exam.model_dump_json(), nx=True)
        if not created:
            raise Conflict(f"exam {exam.id} exists", reason="exam_exists")
        await self.redis.sadd(keys.staff_exams_key(organiser), exam.id)
        return exam

    async def get(self, exam_id: str) -> Exam:
        raw = await self.redis.get(keys.exam_key(exam_id))
        if raw is None:
            raise NotFound("no such exam", reason="exam_not_found")
        return Exam.model_validate_json(raw)

    async def find(self, exam_id: str) -> Exam | None:
        raw = await self.redis.get(keys.exam_key(exam_id))
        return None if raw is None else Exam.model_validate_json(raw)

    async def extend(self, exam_id: str, minutes: int) -> Exam:
        """Move the exam's end `minutes` later (an optimistic transaction on its record)."""
        key = keys.exam_key(exam_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        raise NotFound("no such exam", reason="exam_not_found")
                    exam = Exam.model_validate_json(raw)
                    exam = exam.model_copy(
                        update={"ends_at": exam.ends_at + timedelta(minutes=minutes)}
                    )
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(key, exam.model_dump_json())
                    await pipe.execute()
                    return exam
                except WatchError:
                    continue

    # -- the schedule --------------------------------------------------------------

    def schedule(self, exam: ExamSpec, candidate: Candidate | None = None) -> Schedule:
        """The times of `exam` for `candidate` (their accommodation included)."""
        return Schedule.of(
            exam,
            opens_before=self.settings.login_opens_minutes_before,
            late_cutoff=self.settings.late_cutoff_minutes,
            extra=candidate.extra_minutes if candidate is not None else 0,
        )

    def login_opens(self, exam: Exam) -> float:
        """When candidates may log in (Unix seconds): from `login_opens_minutes_before`
        the start, or at once for an exam whose candidates enrol their face themselves
        (enrolment closes at the start). Logins never close: see `Sessions.candidate_login`."""
        return 0.0 if exam.candidate_enrolment else self.schedule(exam).opens_at.timestamp()

    def check_schedule(self, exam: ExamSpec, candidate: Candidate, action: Action) -> None:
        """403 `not_started`, `too_late` or `exam_over` unless `action` is allowed now."""
        self.schedule(exam, candidate).check(
            action, datetime.now(UTC), joined=candidate.joined, admitted=candidate.admitted
        )

    async def ends_for(self, exam_id: str, cid: str) -> tuple[Exam, datetime]:
        """The exam and when it ends for this candidate, in one round trip (heartbeats)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(keys.exam_key(exam_id))
            pipe.hget(keys.candidate_key(exam_id, cid), "extra_minutes")
            raw, extra = await pipe.execute()
        if raw is None:
            raise NotFound("no such exam", reason="exam_not_found")
        exam = Exam.model_validate_json(raw)
        minutes = int(extra) if extra else 0
        return exam, Schedule.of(exam, opens_before=0, late_cutoff=0, extra=minutes).ends_at

    async def set_accommodation(self, exam_id: str, cid: str, minutes: int) -> None:
        await self.redis.hset(keys.candidate_key(exam_id, cid), "extra_minutes", minutes)

    async def mark_joined(self, exam_id: str, cid: str) -> None:
        """Remember the candidate's first join: after the late cut-off they may come back."""
        await self.redis.hsetnx(keys.candidate_key(exam_id, cid), "joined_at", time.time())

    async def admit(self, exam_id: str, cid: str) -> None:
        """A proctor readmitted the candidate: they may join after the late cut-off."""
        await self.redis.hset(keys.candidate_key(exam_id, cid), "admitted_at", time.time())

    async def late_after(self, exam: Exam, cids: list[str]) -> dict[str, float]:
        """For each of `cids` who has neither joined nor been readmitted, the moment (Unix
        seconds) after which their first join is refused `too_late`."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for cid in cids:
                pipe.hmget(
                    keys.candidate_key(exam.id, cid), ["extra_minutes", "joined_at", "admitted_at"]
                )
            rows = await pipe.execute()
        late = {}
        for cid, (extra, joined, admitted) in zip(cids, rows, strict=True):
            if joined or admitted:
                continue
            schedule = Schedule.of(
                exam,
                opens_before=0,
                late_cutoff=self.settings.late_cutoff_minutes,
                extra=int(extra) if extra else 0,
            )
            late[cid] = schedule.late_after.timestamp()
        return late

    async def staff_exams(self, username: str) -> list[str]:
        """The exams of an organiser (their own), a chief proctor or an examiner (assigned):
        one set, as an account has one role."""
        return sorted(text(m) for m in await self.redis.smembers(keys.staff_exams_key(username)))

    # -- candidates ------------------------------------------------------------

    async def candidate(self, exam_id: str, cid: str) -> Candidate | None:
        raw = await self.redis.hgetall(keys.candidate_key(exam_id, cid))
        if not raw:
            return None
        fields = {text(k): v for k, v in raw.items()}
        return Candidate(
            exam=exam_id,
            cid=cid,
            room=text(fields["room"]),
            minor=fields.get("minor") == b"1",
            has_guardian_consent=bool(fields.get("guardian")),
            consent_version=text(fields["consent_version"])
            if fields.get("consent_version")
            else None,
            extra_minutes=int(fields.get("extra_minutes") or 0),
            joined=bool(fields.get("joined_at")),
            admitted=bool(fields.get("admitted_at")),
        )

    async def identity(self, exam_id: str, cid: str) -> dict[str, str]:
        """The clear identity of a candidate, for the staff allowed to see it."""
        raw = await self.redis.hgetall(keys.candidate_key(exam_id, cid))
        if not raw:
            raise NotFound("no such candidate", reason="candidate_not_found")
        opened = {}
        for name in ("name", "candidate_no"):
            opened[name] = (
                await self.keys.open(exam_id, f"identity:{name}", blob(raw[name.encode()]))
            ).decode()
        return opened

    async def room_candidates(self, exam_id: str, room: str) -> list[str]:
        return sorted(
            text(m) for m in await self.redis.smembers(keys.room_roster_key(exam_id, room))
        )

    async def rooms(self, exam_id: str) -> dict[str, int]:
        raw = await self.redis.hgetall(keys.exam_rooms_key(exam_id))
        return {text(k): int(v) for k, v in raw.items()}

    # -- roster import -----------------------------------------------------------

    async def import_roster(self, exam: Exam, parsed: ParsedRoster) -> RosterReport:
        """All or nothing: check capacity, then write every changed row in one transaction."""
        rows = [
            (line, row, self.candidate_id(exam.id, row.candidate_no)) for line, row in parsed.rows
        ]
        async with self.redis.pipeline(transaction=False) as pipe:
            for _, _, cid in rows:
                pipe.hmget(keys.candidate_key(exam.id, cid), ["fp", "room"])
            existing = await pipe.execute()
        members = {
            room: set(await self.room_candidates(exam.id, room))
            for room in await self.rooms(exam.id)
        }
        for (_line, row, cid), (_fp, old_room) in zip(rows, existing, strict=True):
            if old_room is not None:
                members.setdefault(text(old_room), set()).discard(cid)
            members.setdefault(row.room, set()).add(cid)
        for line, row, _cid in rows:
            if len(members[row.room]) > exam.room_capacity:
                parsed.error(line, "room", "room_full")
        if parsed.errors:
            raise InvalidInput(
                "the roster has errors; nothing was imported",
                reason="roster_invalid",
                errors=parsed.errors,
                error_count=parsed.error_count,
            )
        created = updated = 0
        async with self.redis.pipeline(transaction=True) as pipe:
            for (_line, row, cid), (fp, old_room) in zip(rows, existing, strict=True):
                fingerprint = self._fingerprint(row)
                if fp is not None and text(fp) == fingerprint:
                    continue
                created += fp is None
                updated += fp is not None
                pipe.hset(
                    keys.candidate_key(exam.id, cid),
                    mapping=await self._sealed(exam, row, cid, fingerprint),
                )
                if old_room is not None and text(old_room) != row.room:
                    pipe.srem(keys.room_roster_key(exam.id, text(old_room)), cid)
                pipe.sadd(keys.room_roster_key(exam.id, row.room), cid)
            for room, cids in members.items():
                pipe.hset(keys.exam_rooms_key(exam.id), room, len(cids))
            await pipe.execute()
        return RosterReport(
            rows=len(rows),
            created=created,
            updated=updated,
            unchanged=len(rows) - created - updated,
            rooms={room: len(cids) for room, cids in sorted(members.items())},
        )

    def _fingerprint(self, row: RosterRow) -> str:
        return hmac.new(self._pseudonym, row.model_dump_json().encode(), hashlib.sha256).hexdigest()

    async def _sealed(
        self, exam: Exam, row: RosterRow, cid: str, fingerprint: str
    ) -> dict[Any, Any]:
        minor = _age_on(row.date_of_birth, exam.starts_at.date()) < exam.min_age_without_guardian
        fields: dict[Any, Any] = {
            "cid": cid,
            "room": row.room,
            "minor": "1" if minor else "0",
            "fp": fingerprint,
        }
        clear = {
            "name": row.name,
            "candidate_no": row.candidate_no,
            "date_of_birth": row.date_of_birth.isoformat(),
            "guardian": row.guardian_consent or "",
        }
        for name, value in clear.items():
            fields[name] = (
                await self.keys.seal(exam.id, f"identity:{name}", value.encode()) if value else b""
            )
        return fields

    # -- consent -----------------------------------------------------------------

    async def record_consent(self, exam_id: str, cid: str, kind: str, value: str) -> None:
        """Keep a time-stamped consent record and the candidate's current state."""
        at = time.time()
        # A guardian's consent reference identifies a family: it is kept sealed in the
        # candidate's record only; the consent log says that one was recorded, and when.
        logged = "recorded" if kind == "guardian" else value
        record = json.dumps({"cid": cid, "kind": kind, "value": logged, "at": at})
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(keys.consents_key(exam_id), {"r": record})
            if kind == "policy":
                pipe.hset(
                    keys.candidate_key(exam_id, cid),
                    mapping={"consent_version": value, "consented_at": at},
                )
            elif kind == "guardian":
                sealed = await self.keys.seal(exam_id, "identity:guardian", value.encode())
                pipe.hset(keys.candidate_key(exam_id, cid), "guardian", sealed)
            await pipe.execute()

    # -- proctors ------------------------------------------------------------------

    async def assign_proctor(self, exam_id: str, room: str, username: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.sadd(keys.room_proctors_key(exam_id, room), username)
            pipe.sadd(keys.staff_rooms_key(username), f"{exam_id}/{room}")
            await pipe.execute()

    async def proctor_rooms(self, username: str) -> list[str]:
        return sorted(text(m) for m in await self.redis.smembers(keys.staff_rooms_key(username)))

    # -- exam-wide staff: chief proctors and examiners ----------------------------------

    async def assign_exam_staff(self, exam_id: str, role: str, username: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.sadd(keys.exam_staff_key(exam_id, role), username)
            pipe.sadd(keys.staff_exams_key(username), exam_id)
            await pipe.execute()

    async def unassign_exam_staff(self, exam_id: str, role: str, username: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.srem(keys.exam_staff_key(exam_id, role), username)
            pipe.srem(keys.staff_exams_key(username), exam_id)
            await pipe.execute()

    async def exam_staff(self, exam_id: str, role: str) -> list[str]:
        members = await self.redis.smembers(keys.exam_staff_key(exam_id, role))
        return sorted(text(m) for m in members)
