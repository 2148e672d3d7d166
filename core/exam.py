"""The exam record: what an organiser sets, and the retention rules every subsystem obeys.

Owned here, below the gateway and the subsystems, because all of them read it: the
gateway validates a new exam against `ExamSpec`, the room, face, media and privacy
subsystems load the stored `Exam`. The API's request body (`api.models.ExamSpec`)
is an `ExamSpec`; the stored record adds who organises it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from infra.errors import Forbidden

Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")]
DataClass = Literal[
    "recordings",
    "photos",
    "face",
    "logs",
    "timelines",
    # Kept in Redis, not in the bucket: the roster identity (name, date of birth, candidate
    # number, guardian reference), the consent records, candidates' correction requests and
    # complaints with their answers, and the exam's own record (which goes last of all).
    "identity",
    "consents",
    "requests",
    "exam_record",
]
Trigger = Literal["candidate_exit", "exam_end", "fixed_date"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetentionRule(Strict):
    data_class: DataClass
    trigger: Trigger
    after_seconds: int = Field(ge=0, le=10 * 365 * 86400)
    fixed_date: datetime | None = None

    @model_validator(mode="after")
    def _fixed_date_needs_a_date(self) -> RetentionRule:
        if (self.trigger == "fixed_date") != (self.fixed_date is not None):
            raise ValueError("fixed_date is required with, and only with, trigger=fixed_date")
        return self


def _default_retention() -> list[RetentionRule]:
    day = 86400
    return [
        RetentionRule(data_class="recordings", trigger="exam_end", after_seconds=30 * day),
        RetentionRule(data_class="photos", trigger="exam_end", after_seconds=30 * day),
        RetentionRule(data_class="face", trigger="exam_end", after_seconds=7 * day),
        RetentionRule(data_class="logs", trigger="exam_end", after_seconds=90 * day),
        RetentionRule(data_class="timelines", trigger="exam_end", after_seconds=180 * day),
        *redis_retention_defaults(),
    ]


def redis_retention_defaults() -> list[RetentionRule]:
    """The default periods of the classes kept in Redis, which also apply to an exam whose
    rules leave them out (its record predates them, or its organiser named only some):
    identity a year after the exam, consent records and requests three years (the proof
    of what was agreed and asked outlives the data it covers), the exam record a day after."""
    day = 86400
    return [
        RetentionRule(data_class="identity", trigger="exam_end", after_seconds=365 * day),
        RetentionRule(data_class="consents", trigger="exam_end", after_seconds=3 * 365 * day),
        RetentionRule(data_class="requests", trigger="exam_end", after_seconds=3 * 365 * day),
        RetentionRule(
            data_class="exam_record", trigger="exam_end", after_seconds=3 * 365 * day + day
        ),
    ]


class ExamSpec(Strict):
    id: Identifier
    title: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    starts_at: datetime
    ends_at: datetime
    region: str
    room_capacity: int = Field(default=30, ge=1, le=500)
    retention: list[RetentionRule] = Field(default_factory=_default_retention)
    policy_version: Annotated[str, StringConstraints(min_length=1, max_length=32)] = "1"
    min_age_without_guardian: int = Field(default=18, ge=0, le=30)
    face_attempts: int = Field(default=3, ge=1, le=10)
    candidate_enrolment: bool = False
    keep_enrolment_photo: bool = False
    # Candidates join only once verified by face (or accepted by a proctor's review).
    require_face_verification: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> ExamSpec:
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        classes = [rule.data_class for rule in self.retention]
        if len(set(classes)) != len(classes):
            raise ValueError("one retention rule per data class")
        return self


class Exam(ExamSpec):
    organiser: str
    # Set once by its organiser (`POST .../cancel`): logins, joins and publishing are
    # refused 403 `exam_cancelled` from then on, and live candidates are ended at their
    # next beat as at the exam's end. Never cleared: a cancelled exam is not revived.
    cancelled_at: datetime | None = None
    cancelled_by: str | None = None

    @property
    def cancelled(self) -> bool:
        return self.cancelled_at is not None


# What a candidate asks of the schedule: to log in, to join the room or publish media, to
# beat (a heartbeat, once joined).
Action = Literal["login", "join", "publish", "heartbeat"]


@dataclass(frozen=True, slots=True)
class Schedule:
    """One candidate's times: logins open at `opens_at`, joining and publishing wait for
    `starts_at`, a first join is refused after `late_after` (unless readmitted), and
    everything ends at `ends_at`. An accommodation's minutes move `late_after` and
    `ends_at`; an extension of the exam moved the exam's own `ends_at` already."""

    opens_at: datetime
    starts_at: datetime
    late_after: datetime
    ends_at: datetime

    @classmethod
    def of(
        cls, exam: ExamSpec, *, opens_before: float, late_cutoff: float, extra: float = 0
    ) -> Schedule:
        """`opens_before`, `late_cutoff` and `extra` in minutes."""
        more = timedelta(minutes=extra)
        starts_at, ends_at = _aware(exam.starts_at), _aware(exam.ends_at)
        return cls(
            opens_at=starts_at - timedelta(minutes=opens_before),
            starts_at=starts_at,
            late_after=starts_at + timedelta(minutes=late_cutoff) + more,
            ends_at=ends_at + more,
        )

    def check(
        self, action: Action, now: datetime, *, joined: bool = False, admitted: bool = False
    ) -> None:
        """Raise 403 unless `action` is allowed at `now`: `login_not_open`, `not_started`,
        `too_late` (a first join after the cut-off, unless `admitted` by a proctor; a
        candidate who `joined` in time may come back) or `exam_over`."""
        if action == "login":
            # Logins stay open after the end: the outcome and the candidate's rights
            # (a copy of their data, deletion) are reached by logging in.
            if now < self.opens_at:
                raise Forbidden(
                    "logins for this exam are not open yet",
                    reason="login_not_open",
                    **self._times(now),
                )
            return
        if now >= self.ends_at:
            raise Forbidden("the exam is over", reason="exam_over", **self._times(now))
        if action in ("join", "publish"):
            if now < self.starts_at:
                raise Forbidden(
                    "the exam has not started: wait for its start",
                    reason="not_started",
                    **self._times(now),
                )
            if now > self.late_after and not (joined or admitted):
                raise Forbidden(
                    "too late to join: a proctor may readmit you",
                    reason="too_late",
                    **self._times(now),
                )

    def _times(self, now: datetime) -> dict[str, Any]:
        return {**self.as_json(), "now": now.isoformat()}

    def as_json(self) -> dict[str, str]:
        return {
            "opens_at": self.opens_at.isoformat(),
            "starts_at": self.starts_at.isoformat(),
            "late_after": self.late_after.isoformat(),
            "ends_at": self.ends_at.isoformat(),
        }


def _aware(moment: datetime) -> datetime:
    """A time without a zone is taken as UTC, as the API's clients mean it."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class RosterRow(BaseModel):
    exam_no: str
    candidate_no: str
    name: str
    date_of_birth: date
    room: str
    guardian_consent: str | None


class RosterReport(BaseModel):
    rows: int
    created: int
    updated: int
    unchanged: int
    rooms: dict[str, int]
