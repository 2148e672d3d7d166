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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import WatchError

from core import keys
from core.exam import Action, Exam, ExamSpec, RosterReport, RosterRow, Schedule
from core.roster import ParsedRoster
from infra.crypto import DataKeys
from infra.errors import Conflict, Forbidden, InvalidInput, NotFound
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
    # The separate consent to biometric processing (its version), or a refusal of it,
    # which sends the candidate to a proctor's manual identity check instead of the face
    # checks; and a withdrawal from the exam, after which they may not join again.
    biometric_consent: str | None = None
    biometric_refused: bool = False
    withdrawn: bool = False


def _utc(moment: datetime) -> datetime:
    """A time without a zone is taken as UTC, as the API's clients mean it."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


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
        """Move the exam's end `minutes` later."""

        def change(exam: Exam) -> Exam:
            return exam.model_copy(update={"ends_at": exam.ends_at + timedelta(minutes=minutes)})

        return await self._change(exam_id, change)

    async def edit(self, exam_id: str, changes: dict[str, Any]) -> Exam:
        """Change the exam's title or times (`changes`: those given), or refuse an edit that
        makes no sense: 409 `exam_cancelled`, `exam_over` (an ended exam is not reopened),
        `already_started` (its start moved once candidates may be in), 422
        `ends_before_start`, `ends_in_past`, `starts_in_past`, `nothing_to_change`.
        Nothing is stored when refused."""

        def change(exam: Exam) -> Exam:
            now = datetime.now(UTC)
            if exam.cancelled:
                raise Conflict("the exam was cancelled", reason="exam_cancelled")
            if now >= _utc(exam.ends_at):
                raise Conflict("the exam is over", reason="exam_over")
            moved = {k: v for k, v in changes.items() if getattr(exam, k) != v}
            if not moved:
                raise InvalidInput("the edit changes nothing", reason="nothing_to_change")
            starts = _utc(moved.get("starts_at", exam.starts_at))
            ends = _utc(moved.get("ends_at", exam.ends_at))
            if "starts_at" in moved and now >= _utc(exam.starts_at):
                raise Conflict("the exam has started: its start stays", reason="already_started")
            if "starts_at" in moved and starts <= now:
                raise InvalidInput("the new start is in the past", reason="starts_in_past")
            if ends <= starts:
                raise InvalidInput("the end must come after the start", reason="ends_before_start")
            if ends <= now:
                raise InvalidInput("the new end is in the past", reason="ends_in_past")
            return exam.model_copy(update=moved)

        return await self._change(exam_id, change)

    async def cancel(self, exam_id: str, by: str) -> Exam:
        """Mark the exam cancelled: 409 `exam_cancelled` (already) or `exam_over` (ended)."""

        def change(exam: Exam) -> Exam:
            now = datetime.now(UTC)
            if exam.cancelled:
                raise Conflict("the exam was cancelled already", reason="exam_cancelled")
            if now >= _utc(exam.ends_at):
                raise Conflict("the exam is over: there is nothing to cancel", reason="exam_over")
            return exam.model_copy(update={"cancelled_at": now, "cancelled_by": by})

        return await self._change(exam_id, change)

    async def _change(self, exam_id: str, change: Callable[[Exam], Exam]) -> Exam:
        """Apply `change` to the stored exam in an optimistic transaction (retried when the
        record moved meanwhile); what `change` raises stores nothing."""
        key = keys.exam_key(exam_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        raise NotFound("no such exam", reason="exam_not_found")
                    exam = change(Exam.model_validate_json(raw))
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
        (enrolment closes at the start). Logins never close: see `Sessions.candidate_login`,
        which also refuses a cancelled exam's logins, once the pair is known to be right."""
        return 0.0 if exam.candidate_enrolment else self.schedule(exam).opens_at.timestamp()

    def check_schedule(self, exam: ExamSpec, candidate: Candidate, action: Action) -> None:
        """403 `exam_cancelled`, `not_started`, `too_late` or `exam_over` unless `action` is
        allowed now."""
        if isinstance(exam, Exam) and exam.cancelled:
            raise Forbidden("this exam was cancelled", reason="exam_cancelled")
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
            biometric_consent=text(fields["biometric"]) if fields.get("biometric") else None,
            biometric_refused=fields.get("biometric_refused") == b"1",
            withdrawn=bool(fields.get("withdrawn_at")),
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

    async def remove_candidate(self, exam_id: str, cid: str) -> Candidate:
        """Take the candidate off the exam: off their room's roster (and its count), their
        identity record (sealed name, number, birth date, guardian) deleted, a proctor's
        end forgotten. Their recordings, photos and face data stay in the region until the
        retention rules delete them (the caller journals their exit). 404 if unknown."""
        candidate_key = keys.candidate_key(exam_id, cid)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(candidate_key)
                    candidate = await self.candidate(exam_id, cid)
                    if candidate is None:
                        raise NotFound("no such candidate", reason="candidate_not_found")
                    roster_key = keys.room_roster_key(exam_id, candidate.room)
                    await pipe.watch(roster_key)
                    left = await pipe.scard(roster_key) - await pipe.sismember(roster_key, cid)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.srem(roster_key, cid)
                    pipe.hset(keys.exam_rooms_key(exam_id), candidate.room, left)
                    pipe.delete(candidate_key)
                    pipe.hdel(keys.ended_candidates_key(exam_id), cid)
                    await pipe.execute()
                    return candidate
                except WatchError:
                    continue

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

    async def record_consent(
        self, exam_id: str, cid: str, kind: str, value: str, method: str | None = None
    ) -> None:
        """Keep a time-stamped consent record and the candidate's current state.

        `biometric` takes `granted:V` or `refused:V`; a guardian's record says how it was
        given (`method`: `organiser` or `link`)."""
        at = time.time()
        # A guardian's consent reference identifies a family: it is kept sealed in the
        # candidate's record only; the consent log says that one was recorded, and when.
        logged = "recorded" if kind == "guardian" else value
        entry: dict[str, Any] = {"cid": cid, "kind": kind, "value": logged, "at": at}
        if kind == "guardian":
            entry["method"] = method or "organiser"
        record = json.dumps(entry)
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
            elif kind == "biometric":
                granted = value.startswith("granted:")
                pipe.hset(
                    keys.candidate_key(exam_id, cid),
                    mapping={
                        "biometric": value.split(":", 1)[1] if granted else "",
                        "biometric_refused": "0" if granted else "1",
                    },
                )
            await pipe.execute()

    async def withdraw_consent(self, exam_id: str, cid: str, kind: str, version: str) -> None:
        """Record the withdrawal of a consent and clear what it allowed, in one transaction.

        Withdrawing biometric consent counts as a refusal (a proctor's manual check);
        the caller deletes the face data, which lives in another subsystem."""
        record = {"cid": cid, "kind": kind, "value": f"withdrawn:{version}", "at": time.time()}
        key = keys.candidate_key(exam_id, cid)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(keys.consents_key(exam_id), {"r": json.dumps(record)})
            if kind == "policy":
                pipe.hdel(key, "consent_version")
            elif kind == "guardian":
                pipe.hset(key, "guardian", b"")
            elif kind == "biometric":
                pipe.hset(key, mapping={"biometric": "", "biometric_refused": "1"})
            await pipe.execute()

    async def mark_withdrawn(self, exam_id: str, cid: str) -> None:
        """The candidate withdrew from the exam: they may not join or publish again."""
        await self.redis.hsetnx(keys.candidate_key(exam_id, cid), "withdrawn_at", time.time())

    # -- proctors ------------------------------------------------------------------

    async def assign_proctor(self, exam_id: str, room: str, username: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.sadd(keys.room_proctors_key(exam_id, room), username)
            pipe.sadd(keys.staff_rooms_key(username), f"{exam_id}/{room}")
            await pipe.execute()

    async def unassign_proctor(self, exam_id: str, room: str, username: str) -> bool:
        """Take `username` off the room; False if they were not assigned to it."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.srem(keys.room_proctors_key(exam_id, room), username)
            pipe.srem(keys.staff_rooms_key(username), f"{exam_id}/{room}")
            removed, _ = await pipe.execute()
        return bool(removed)

    async def room_proctors(self, exam_id: str, room: str) -> list[str]:
        members = await self.redis.smembers(keys.room_proctors_key(exam_id, room))
        return sorted(text(m) for m in members)

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
