"""Knobs of retention, legal holds, exports and uploads (`actors.privacy`).

The project `Settings` nests one `PrivacySettings` as `EXAMDAY_PRIVACY__*`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class PrivacySettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # How often each region's retention actor sweeps on its own (runs can also be asked for).
    sweep_interval_seconds: float = Field(default=3600.0, gt=0)
    # Objects one run plans at most; the rest waits for the next run.
    max_objects_per_run: int = Field(default=200_000, ge=1)
    # Deletes in flight at once, and objects deleted between two progress saves.
    delete_concurrency: int = Field(default=8, ge=1, le=64)
    delete_batch: int = Field(default=100, ge=1, le=1000)
    # A run whose lock is not refreshed for this long may be taken over.
    run_lock_seconds: float = Field(default=120.0, ge=5)
    # Object versions that one legal hold may pin (Object Lock) at placement.
    max_held_objects: int = Field(default=100_000, ge=1)
    # An export archive for an authority: objects and bytes at most.
    max_export_objects: int = Field(default=10_000, ge=1)
    max_export_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    # Photos and whiteboard snapshots one candidate may share in one exam.
    max_uploads_per_candidate: int = Field(default=50, ge=1, le=10_000)
    # Entries a data-subject copy or a consent export reads from one stream at most.
    max_stream_entries: int = Field(default=100_000, ge=100)
    # Days each audit entry (deletion receipts included) is kept under S3 Object Lock in
    # COMPLIANCE mode: no one, the bucket's owner included, can delete or shorten it before.
    # Receipts are the evidence that data went, so they outlive it by years (about seven).
    audit_retention_days: int = Field(default=2557, ge=1, le=36_500)
    # Upload attempts (refused ones too: too big, wrong type, undecodable) one candidate
    # may make per window; each costs a decode, so a refusal is not free to repeat.
    upload_attempts_per_window: int = Field(default=100, ge=1, le=100_000)
    upload_window_seconds: int = Field(default=3600, ge=1)
    # `GET /v1/me/data` and `POST /v1/me/deletion-request` per candidate per window.
    subject_requests_per_window: int = Field(default=10, ge=1, le=10_000)
    subject_request_window_seconds: int = Field(default=3600, ge=1)
