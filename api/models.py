"""Request and response bodies of the public API."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from core.exam import ExamSpec, Identifier
from infra.tokens import StaffRole

CandidateNo = Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z]{1,24}$")]
Username = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{2,31}$")]
NetworkType = Literal["wifi", "cellular", "ethernet", "unknown"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExamCreate(ExamSpec):
    """The body of `POST /v1/exams`: the organiser's terms of a new exam."""


class Login(Strict):
    exam_no: Identifier
    candidate_no: CandidateNo


class StaffLogin(Strict):
    username: Username
    password: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class StaffCreate(Strict):
    username: Username
    password: Annotated[str, StringConstraints(min_length=12, max_length=256)]
    role: StaffRole = "proctor"


class SessionOut(BaseModel):
    token: str
    role: str
    expires_at: float
    exam: str | None = None
    room: str | None = None
    candidate: str | None = None


class ConsentIn(Strict):
    policy_version: Annotated[str, StringConstraints(min_length=1, max_length=32)]


class ExtendIn(Strict):
    """`POST /v1/exams/{exam}/extend`: move the exam's end this many minutes later."""

    minutes: int = Field(ge=1, le=24 * 60)


class AccommodationIn(Strict):
    """`PUT .../candidates/{cid}/accommodation`: the candidate's extra minutes (0: none),
    added to their late cut-off and their end."""

    extra_minutes: int = Field(ge=0, le=24 * 60)


class GuardianConsentIn(Strict):
    reference: Annotated[str, StringConstraints(min_length=1, max_length=128)]


class HeartbeatIn(Strict):
    network: NetworkType | None = None


class JoinIn(Strict):
    network: NetworkType = "unknown"


class MessageIn(Strict):
    text: Annotated[str, StringConstraints(min_length=1, max_length=2000)]
    to: str | None = None  # a candidate id, or the whole room


class IncidentIn(Strict):
    candidate: str
    type: Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,40}$")]
    severity: Literal["info", "low", "medium", "high"] = "medium"
    evidence: Annotated[str, StringConstraints(max_length=512)] | None = None
    note: Annotated[str, StringConstraints(max_length=2000)] | None = None


class ReviewIn(Strict):
    decision: Literal["reviewed", "dismissed", "confirmed"]


class EventOut(BaseModel):
    event_id: str
    state: str | None = None


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


# -- client logs (api/routes/logs.py) ------------------------------------------------

DevicePseudonym = Annotated[str, StringConstraints(pattern=r"^d[0-9a-f]{31}$")]
SessionPseudonym = Annotated[str, StringConstraints(pattern=r"^s[0-9a-f]{31}$")]
ClientIdentifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{4,128}$")]


class LogSearch(Strict):
    """A support query: one device or session, by pseudonym or by the clear id to pseudonymise."""

    device: DevicePseudonym | None = None
    device_id: ClientIdentifier | None = None
    session: SessionPseudonym | None = None
    session_id: ClientIdentifier | None = None
    exam: Identifier | None = None  # none: records sent without a candidate token
    since: datetime
    until: datetime
    limit: int = Field(default=200, ge=1, le=1000)

    @model_validator(mode="after")
    def _one_subject_and_a_bounded_range(self) -> LogSearch:
        named = [v for v in (self.device, self.device_id, self.session, self.session_id) if v]
        if len(named) != 1:
            raise ValueError("name exactly one of device, device_id, session, session_id")
        if not timedelta(0) < self.until - self.since <= timedelta(days=31):
            raise ValueError("until must be after since, at most 31 days later")
        return self


# -- update manifests (api/routes/updates.py) ----------------------------------------

Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")]
Channel = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,15}$")]
FileName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
# Platforms and versions are checked by the update actor, which answers
# `unknown_platform` and `bad_version` rather than a generic schema error.
PlatformName = Annotated[str, StringConstraints(max_length=32)]
VersionText = Annotated[str, StringConstraints(max_length=64)]


class InstallerSpec(Strict):
    filename: FileName
    size: int = Field(ge=1)
    sha256: Sha256Hex


class ReleaseCreate(Strict):
    platform: PlatformName
    channel: Channel = "stable"
    version: VersionText
    min_supported: VersionText | None = None
    notes: Annotated[str, StringConstraints(max_length=4000)] = ""
    installer: InstallerSpec


class GateSpec(Strict):
    margin: float = Field(ge=0, le=1)
    min_sessions: int = Field(ge=1)


class RolloutRef(Strict):
    platform: PlatformName
    channel: Channel = "stable"


class ReleaseRef(RolloutRef):
    version: VersionText


class RolloutStart(ReleaseRef):
    gate: GateSpec | None = None


class UpdateCheck(Strict):
    platform: PlatformName
    channel: Channel = "stable"
    version: VersionText
    device_id: ClientIdentifier
    region: Annotated[str, StringConstraints(max_length=64)] | None = None


# -- privacy: legal holds, exports, consents (api/routes/holds.py, privacy.py) -------

HoldText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
HoldReference = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)
]


class HoldCreate(Strict):
    """A legal hold on a whole exam, or on one candidate (`candidate`: their id)."""

    reference: HoldReference
    reason: HoldText
    candidate: Identifier | None = None


class ExportCreate(Strict):
    """A disclosure package for an authority: the exam, or one candidate's data."""

    reference: HoldReference
    reason: HoldText
    candidate: Identifier | None = None


class ThirdPartyConsentIn(Strict):
    allow: bool


# -- a candidate asks for help (api/routes/help.py) -----------------------------------

HelpText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class HelpIn(Strict):
    """`POST /v1/me/help`: a raised hand (no text), or a message to the room's proctors."""

    kind: Literal["hand", "message"]
    text: HelpText | None = None


# -- the organiser's console (api/routes/exams.py, organiser.py) ----------------------


class ExamEdit(Strict):
    """`PATCH /v1/exams/{exam}`: the fields to change (the others stay)."""

    title: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None


# -- review and grading (api/routes/review.py), issue #26 item 5 ---------------------

CriterionId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,32}$")]
CriterionLabel = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)
]
ReviewText = Annotated[str, StringConstraints(max_length=2000)]


class RubricLabel(Strict):
    zh: CriterionLabel
    en: CriterionLabel


class RubricCriterion(Strict):
    id: CriterionId
    label: RubricLabel
    max_points: Annotated[int, Field(ge=1, le=1000)]


class RubricIn(Strict):
    """`PUT /v1/exams/{exam}/rubric`: the criteria examiners score (ids unique)."""

    criteria: Annotated[list[RubricCriterion], Field(min_length=1, max_length=50)]


class ReviewDecisionIn(Strict):
    decision: Literal["cleared", "warning", "voided"]
    note: ReviewText = ""


class ScoresIn(Strict):
    """An examiner's points per criterion of the rubric (checked against it), and a comment."""

    scores: Annotated[
        dict[CriterionId, Annotated[float, Field(allow_inf_nan=False)]], Field(max_length=50)
    ]
    comment: ReviewText = ""
