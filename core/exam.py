"""The exam record: what an organiser sets, and the retention rules every subsystem obeys.

Owned here, below the gateway and the subsystems, because all of them read it: the
gateway validates a new exam against `ExamSpec`, the room, face, media and privacy
subsystems load the stored `Exam`. The API's request body (`api.models.ExamSpec`)
is an `ExamSpec`; the stored record adds who organises it.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")]
DataClass = Literal["recordings", "photos", "face", "logs", "timelines"]
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
