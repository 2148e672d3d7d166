"""Who answers for the platform, and the bounds of candidates' rights requests.

The contact page (`GET /v1/privacy/contact`) is read from here, so the operator's name,
address and the policy's effective date change with a deployment, not with the code. The
bounds keep a data copy or a request's cost proportional to one candidate's own data.
"""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field


class RightsSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    operator_name: str = Field(default="Examday operator", min_length=1, max_length=200)
    operator_name_zh: str = Field(default="Examday 运营方", min_length=1, max_length=200)
    contact_address: str = Field(default="privacy@examday.invalid", min_length=3, max_length=300)
    effective_date: date = date(2026, 1, 1)

    # A guardian's consent link works once, for this long.
    guardian_link_seconds: int = Field(default=7 * 86400, ge=300, le=30 * 86400)
    # A data copy: at most this many bytes of recordings and uploads in one archive (the
    # rest is listed in its manifest, not included), and this many recording segments.
    max_archive_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    max_archive_segments: int = Field(default=2000, ge=1)
    # Correction requests and complaints a candidate may have on file, and their length.
    max_requests_per_candidate: int = Field(default=20, ge=1, le=1000)
    max_request_chars: int = Field(default=2000, ge=10, le=20_000)
