"""The records a client sends (logs, crash reports, usage metrics), as validated on entry.

Free text (message, stack, breadcrumbs) is accepted as sent and scrubbed by the
ingest actor; identifiers have strict shapes so that nothing else can hide in
them. The size of a record's free text is checked separately (413, not 422).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

Platform = Literal["android", "ios", "windows", "macos", "linux", "web"]
RecordId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
ClientId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{4,128}$")]
SessionId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,128}$")]
Version = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,6}(\.[0-9]{1,6}){0,3}$")]
Short = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9 ._,()+/-]{1,64}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Breadcrumb(_Strict):
    time: datetime | None = None
    category: Annotated[str, StringConstraints(max_length=64)] = ""
    message: str = ""


class RecordIn(_Strict):
    id: RecordId | None = None
    kind: Literal["log", "crash", "metric"]
    time: datetime
    level: Literal["trace", "debug", "info", "warn", "warning", "error", "fatal"] = "info"
    message: str = ""
    device_id: ClientId
    session_id: SessionId | None = None
    os: Platform
    os_version: Short
    model: Short
    app_version: Version
    stack: str | None = None
    breadcrumbs: list[Breadcrumb] = Field(default_factory=list, max_length=200)
    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_.]{1,64}$")] | None = None
    value: Annotated[float, Field(allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _kind_fields(self) -> RecordIn:
        if self.kind == "crash" and not self.stack:
            raise ValueError("a crash report needs its stack")
        if self.kind == "metric" and self.name is None:
            raise ValueError("a metric needs a name")
        return self

    def text_bytes(self) -> int:
        """Size of the free text, the part a record's size limit is about."""
        size = len(self.message) + len(self.stack or "")
        for crumb in self.breadcrumbs:
            size += len(crumb.message) + len(crumb.category) + 16
        return size

    def epoch(self) -> float:
        moment = self.time if self.time.tzinfo else self.time.replace(tzinfo=UTC)
        return moment.timestamp()
