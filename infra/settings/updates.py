"""Knobs of update manifests and staged rollouts (`actors.updates.manifest`).

The project `Settings` nests one `UpdateSettings` as `EXAMDAY_UPDATES__*`; the
Ed25519 signing key is a top-level secret (`EXAMDAY_UPDATE_SIGNING_KEY`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

PLATFORMS = ("android", "ios", "windows", "macos")


class UpdateSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Installers are not personal data, but a bucket is still chosen by naming a region.
    installer_region: str = "cn-north"
    max_installer_bytes: int = Field(default=4 * 1024**3, ge=1)
    upload_url_seconds: int = Field(default=3600, ge=60, le=7 * 86400)
    download_url_seconds: int = Field(default=900, ge=60, le=7 * 86400)

    # Percentages of devices a rollout offers the new version to, step by step.
    rollout_steps: tuple[int, ...] = (1, 5, 20, 50, 100)

    # Crash gate defaults (a rollout may set its own): the new version halts when its
    # crashed-session rate exceeds the previous version's by `gate_margin` (absolute)
    # once it has `gate_min_sessions` sessions. Checked every `gate_interval_seconds`.
    gate_margin: float = Field(default=0.02, ge=0, le=1)
    gate_min_sessions: int = Field(default=200, ge=1)
    gate_interval_seconds: float = Field(default=10.0, gt=0)

    # No step advances in a region from this long before an exam there starts
    # until this long after it ends.
    freeze_before_minutes: int = Field(default=60, ge=0)
    freeze_after_minutes: int = Field(default=30, ge=0)

    @field_validator("rollout_steps")
    @classmethod
    def _steps(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or value[-1] != 100 or any(not 0 < s <= 100 for s in value):
            raise ValueError("rollout steps are percentages in (0, 100] ending at 100")
        if list(value) != sorted(set(value)):
            raise ValueError("rollout steps must strictly increase")
        return value
