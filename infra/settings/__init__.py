"""The one configuration object. Every knob is an `EXAMDAY_` environment variable.

Nested values use `__`: `EXAMDAY_REGIONS__CN_NORTH__BUCKET=...`, or the whole
map as JSON in `EXAMDAY_REGIONS`.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from infra.settings.face import VerifierSettings
from infra.settings.ingest import IngestSettings
from infra.settings.media import MediaSettings
from infra.settings.ml import FaceSettings
from infra.settings.ops import OpsSettings
from infra.settings.privacy import PrivacySettings
from infra.settings.updates import UpdateSettings

# Secrets in these forms are for a laptop only; anything else refuses to start with them.
PLACEHOLDER_PREFIXES = ("dev-", "change-me", "placeholder")
DEV_MASTER_KEY = "dev-" + base64.urlsafe_b64encode(b"examday-dev-master-key-32-bytes!").decode()


class RegionStore(BaseModel):
    """One region's object store: personal data of an exam in this region goes here only."""

    endpoint: str
    bucket: str
    access_key: SecretStr = SecretStr("dev-access-key")
    secret_key: SecretStr = SecretStr("dev-secret-key")
    signing_region: str = "us-east-1"

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, value: str) -> str:
        if (
            not (3 <= len(value) <= 63)
            or not value.replace("-", "").isalnum()
            or value != value.lower()
        ):
            raise ValueError("bucket names are 3-63 lowercase letters, digits and '-'")
        return value


def _default_regions() -> dict[str, RegionStore]:
    return {
        name: RegionStore(endpoint="http://127.0.0.1:8333", bucket=f"examday-{name}")
        for name in ("cn-north", "cn-east")
    }


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="EXAMDAY_",
        env_nested_delimiter="__",
        extra="ignore",
        frozen=True,
    )

    env: Literal["development", "test", "production"] = "development"
    state_dir: Path = Path(".state")

    # Hot state and journals.
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Object stores, one per region.
    regions: dict[str, RegionStore] = Field(default_factory=_default_regions)
    s3_port: int = 8333

    # Ray: None means the embedded local cluster that `examday up` starts.
    ray_address: str | None = None
    ray_namespace: str = "examday"
    ray_head_ip: str = "127.0.0.2"
    ray_worker_ip: str = "127.0.0.3"
    ray_gcs_port: int = 26380
    ray_node_memory_bytes: int = 4 * 1024**3
    ray_object_store_bytes: int = 512 * 1024**2
    ray_node_cpus: int = 2
    ray_port_base: int = 27000

    # Gateway.
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    # uvicorn worker processes of `examday up`'s gateway (it is stateless; each
    # worker is a Ray driver of its own).
    gateway_workers: int = Field(default=1, ge=1, le=64)
    max_request_bytes: int = 1024 * 1024
    max_upload_bytes: int = 8 * 1024 * 1024
    # Threads per process for blocking S3 calls (boto3), apart from the default executor.
    object_store_threads: int = Field(default=16, ge=1, le=256)

    # Rooms and sessions.
    room_shards: int = Field(default=2, ge=1, le=256)
    heartbeat_timeout_seconds: float = Field(default=15.0, gt=0)
    # The presence socket (`/v1/me/presence`) checks its session again this often:
    # how long a logged-out or replaced session may go on beating there.
    presence_recheck_seconds: float = Field(default=15.0, gt=0)
    # Beats closer together than this on one socket are refused, not forwarded.
    presence_min_interval_seconds: float = Field(default=1.0, ge=0)
    session_ttl_seconds: int = Field(default=6 * 3600, gt=0)
    login_failures_per_ip: int = Field(default=20, ge=1)
    login_failures_per_exam: int = Field(default=500, ge=1)
    login_failures_per_candidate: int = Field(default=5, ge=1)
    login_window_seconds: int = Field(default=300, ge=1)
    max_roster_rows: int = Field(default=100_000, ge=1)
    cookie_secure: bool = True

    # Media plane (WebRTC forwarding, recording, frame sampling), including the
    # only addresses ICE host candidates are gathered on: EXAMDAY_MEDIA__HOST_ADDRESSES.
    media: MediaSettings = Field(default_factory=MediaSettings)
    # MediaShard actors (one Forwarder each) the gateway makes sure exist at start-up.
    media_shards: int = Field(default=1, ge=1, le=256)
    # Face detection, embedding, quality gates, liveness and monitoring.
    face: FaceSettings = Field(default_factory=FaceSettings)
    # Face verifier service: replicas, dynamic batching, back-pressure, monitoring.
    verifier: VerifierSettings = Field(default_factory=VerifierSettings)
    # Client logs and crash reports: limits, rate limits, flushing, the anonymous region.
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    # Update manifests and staged rollouts: installer region, steps, crash gate, freeze.
    updates: UpdateSettings = Field(default_factory=UpdateSettings)
    # Retention sweeps, legal holds, exports for authorities, candidate uploads.
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    # Operations: the metrics endpoint's token and bounds, the room shard controller.
    ops: OpsSettings = Field(default_factory=OpsSettings)

    # Secrets.
    token_signing_key: SecretStr = SecretStr("dev-token-signing-key-not-for-production")
    data_master_key: SecretStr = SecretStr(DEV_MASTER_KEY)
    pseudonym_key: SecretStr = SecretStr("dev-pseudonym-key-not-for-production")
    # Ed25519 seed (32 bytes, urlsafe base64) that signs update manifests; unset
    # outside production means a fixed dev key, unset in production means no signing.
    update_signing_key: SecretStr | None = None
    # Master keys replaced by a rotation (comma-separated, urlsafe base64, 32 bytes each):
    # data keys still wrapped by one of them open until `examday keys rotate` re-wraps them.
    data_master_keys_previous: SecretStr | None = None

    # Telemetry: OTLP is used when OTEL_EXPORTER_OTLP_ENDPOINT is set (the OTel convention);
    # a JSON-lines file of finished spans when trace_file is set.
    service_name: str = "examday"
    trace_file: Path | None = None

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> Settings:
        if self.env == "production":
            weak = [
                name
                for name in ("token_signing_key", "data_master_key", "pseudonym_key")
                if getattr(self, name).get_secret_value().startswith(PLACEHOLDER_PREFIXES)
            ]
            weak += [
                f"regions.{region}.{part}"
                for region, store in self.regions.items()
                for part in ("access_key", "secret_key")
                if getattr(store, part).get_secret_value().startswith(PLACEHOLDER_PREFIXES)
            ]
            signing = self.update_signing_key
            if signing is not None and signing.get_secret_value().startswith(PLACEHOLDER_PREFIXES):
                weak.append("update_signing_key")
            if weak:
                raise ValueError(f"placeholder secrets outside development: {', '.join(weak)}")
        if not self.regions:
            raise ValueError("at least one region is required")
        for name, region in (
            ("ingest.default_region", self.ingest.default_region),
            ("updates.installer_region", self.updates.installer_region),
        ):
            if region not in self.regions:
                raise ValueError(f"{name} {region!r} is not a configured region")
        return self

    # Derived values: computed, never configured twice.
    @property
    def redis_port(self) -> int:
        return urlparse(self.redis_url).port or 6379

    @property
    def redis_host(self) -> str:
        return urlparse(self.redis_url).hostname or "127.0.0.1"

    @property
    def gateway_url(self) -> str:
        return f"http://{self.gateway_host}:{self.gateway_port}"

    @property
    def ray_head_address(self) -> str:
        return self.ray_address or f"{self.ray_head_ip}:{self.ray_gcs_port}"

    def master_key_bytes(self) -> bytes:
        raw = self.data_master_key.get_secret_value()
        if raw.startswith("dev-"):
            raw = raw[4:]
        key = base64.urlsafe_b64decode(raw)
        if len(key) != 32:
            raise ValueError("EXAMDAY_DATA_MASTER_KEY must be 32 bytes, urlsafe base64")
        return key

    def previous_master_keys(self) -> list[bytes]:
        raw = self.data_master_keys_previous
        if raw is None:
            return []
        keys = []
        for part in raw.get_secret_value().split(","):
            text = part.strip().removeprefix("dev-")
            key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)) if text else b""
            if len(key) != 32:
                raise ValueError("EXAMDAY_DATA_MASTER_KEYS_PREVIOUS: 32-byte urlsafe base64 keys")
            keys.append(key)
        return keys


def _revealed(value: Any) -> Any:
    """A settings value as JSON-able data with every secret in clear (for a child's env)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, BaseModel):
        return {name: _revealed(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, dict):
        return {key: _revealed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_revealed(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def settings_to_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process build these same Settings."""
    env: dict[str, str] = {}
    for name in type(settings).model_fields:
        value = _revealed(getattr(settings, name))
        if value is None:
            continue
        env[f"EXAMDAY_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env
