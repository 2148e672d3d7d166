"""The one configuration object. Every knob is an `EXAMDAY_` environment variable.

Nested values use `__`: `EXAMDAY_REGIONS__CN_NORTH__BUCKET=...`, or the whole
map as JSON in `EXAMDAY_REGIONS`.
"""

from __future__ import annotations

import base64
import ipaddress
import json
from datetime import date
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
from infra.settings.rights import RightsSettings
from infra.settings.turn import TurnSettings
from infra.settings.updates import UpdateSettings

# Secrets in these forms are for a laptop only; anything else refuses to start with them.
PLACEHOLDER_PREFIXES = ("dev-", "change-me", "placeholder")
DEV_MASTER_KEY = "dev-" + base64.urlsafe_b64encode(b"examday-dev-master-key-32-bytes!").decode()
# Outside development every key is at least this long: 256 bits, what HMAC-SHA256,
# AES-256 and an Ed25519 seed take.
MIN_KEY_BYTES = 32


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
        # A refused setting's error would otherwise quote the whole input, secrets included.
        hide_input_in_errors=True,
    )

    env: Literal["development", "test", "production"] = "development"
    state_dir: Path = Path(".state")

    # Hot state and journals.
    redis_url: str = "redis://127.0.0.1:6379/0"
    # How often the embedded Redis fsyncs its append-only file: `everysec` loses at
    # most about a second of writes to a machine crash, `always` none (each write
    # waits for the disk), `no` leaves it to the kernel (up to ~30 s).
    redis_fsync: Literal["everysec", "always", "no"] = "everysec"
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
    # The gateway's event loop: uvloop taking in every waiting connection at each
    # wakeup (`api.event_loop`: libuv alone takes one, and a busy gateway's fresh
    # connections waited 15-50 s in the listen queue), or asyncio's own loop.
    gateway_loop: Literal["uvloop", "asyncio"] = "uvloop"
    # Requests one gateway process works on at once (admitted, not yet answered); more
    # are refused at the door, 503 `gateway_busy` with Retry-After (`api.limits`). A
    # valve against a pile-up, not a throttle: twice the most a saturated worker held in
    # the combined rehearsal (about 520); at 256 and 512 it refused there, and the
    # departure wave's tails doubled (docs/capacity.md, History 2026-12-07 morning).
    gateway_max_waiting_requests: int = Field(default=1024, ge=1, le=100_000)
    # Places past that bound for staff (a valid staff token): proctors and organisers
    # are answered while candidates are refused. A console page sends a handful of
    # requests at once, and a worker serves tens of staff.
    gateway_staff_reserved_requests: int = Field(default=64, ge=0, le=10_000)
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
    # `POST /v1/me/heartbeat` per candidate per minute; over it, 429 with Retry-After.
    # Clients beat every 5 s (12 a minute, a few more while retrying): this only stops
    # floods, which would fill the room's journal and its dedupe keys.
    heartbeats_per_minute: int = Field(default=60, ge=1)
    # `POST`/`DELETE /v1/me/help` per candidate per minute (429 `help_limit` beyond): each
    # lands in the proctor's view and the never-trimmed evidence stream, and a real
    # question takes a minute to type.
    help_requests_per_minute: int = Field(default=6, ge=1, le=600)
    session_ttl_seconds: int = Field(default=6 * 3600, gt=0)
    # Login budgets (actors/accounts/sessions.py). A source is an IPv4 address or an IPv6
    # /64. Failures past a budget earn a delay (429 + Retry-After), doubling from
    # `login_delay_base_seconds` up to `login_delay_max_seconds`, for that source only;
    # only a candidate pair is locked outright. Per source, over all logins:
    login_failures_per_ip: int = Field(default=20, ge=1)
    # Failures of all sources against one exam (or all staff logins) after which each
    # source gets one failure there before its delays start: a spread-out guesser is
    # slowed, while a source that has not failed is never refused.
    login_failures_per_exam: int = Field(default=500, ge=1)
    # Per candidate pair from any source (a lock, answered like a wrong pair); for staff,
    # per (account, source): a stranger's guesses do not delay the owner elsewhere.
    login_failures_per_candidate: int = Field(default=5, ge=1)
    # Per staff account from all sources: the slow ceiling on guessing one password. Its
    # delay spares sources the account has logged in from before.
    login_failures_per_account: int = Field(default=50, ge=1)
    login_delay_base_seconds: float = Field(default=5.0, gt=0)
    login_delay_max_seconds: float = Field(default=300.0, gt=0)
    # Counters are forgotten this long after a source's last failure.
    login_window_seconds: int = Field(default=300, ge=1)
    # Reverse proxies / load balancers in front of the gateway (IP networks, as a JSON
    # list: '["10.0.0.0/8"]'). Only a peer in one of them is believed about
    # X-Forwarded-For, whose rightmost address outside them is then the client. Empty:
    # trust none, the peer is the client (behind a proxy, all clients would share one
    # budget: set this there).
    trusted_proxies: list[str] = Field(default_factory=list)
    max_roster_rows: int = Field(default=100_000, ge=1)
    cookie_secure: bool = True
    # Origins (scheme://host[:port]) the web pages are served from. A request that
    # authenticates by the session cookie and changes state, or opens a WebSocket, must
    # come from one of them (`Origin`). Unset: the gateway's own URL (and `localhost`
    # for a loopback gateway); production must set them.
    public_origins: tuple[str, ...] = ()

    # Media plane (WebRTC forwarding, recording, frame sampling), including the
    # only addresses ICE host candidates are gathered on: EXAMDAY_MEDIA__HOST_ADDRESSES.
    media: MediaSettings = Field(default_factory=MediaSettings)
    # TURN relays for candidates behind strict NATs or UDP-blocking networks: the
    # embedded coturn of `examday up`, or an external cluster (EXAMDAY_TURN__URLS).
    turn: TurnSettings = Field(default_factory=TurnSettings)
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
    # The operator's contact page and the bounds of candidates' rights requests.
    rights: RightsSettings = Field(default_factory=RightsSettings)
    # Operations: the metrics endpoint's token and bounds, the room shard controller.
    ops: OpsSettings = Field(default_factory=OpsSettings)

    # Secrets.
    token_signing_key: SecretStr = SecretStr("dev-token-signing-key-not-for-production")
    data_master_key: SecretStr = SecretStr(DEV_MASTER_KEY)
    pseudonym_key: SecretStr = SecretStr("dev-pseudonym-key-not-for-production")
    # Ed25519 seed (32 bytes, urlsafe base64) that signs update manifests; unset
    # outside production means a fixed dev key, unset in production means no signing.
    update_signing_key: SecretStr | None = None
    # Ed25519 seed (32 bytes, urlsafe base64) that signs audit entries and chain heads;
    # same rules as the update key (production requires it: a deletion needs a receipt).
    # Its public half: /.well-known/examday-audit-keys.
    audit_signing_key: SecretStr | None = None
    # Master keys replaced by a rotation (comma-separated, urlsafe base64, 32 bytes each):
    # data keys still wrapped by one of them open until `examday keys rotate` re-wraps them.
    data_master_keys_previous: SecretStr | None = None

    # Telemetry: OTLP is used when OTEL_EXPORTER_OTLP_ENDPOINT is set (the OTel convention);
    # a JSON-lines file of finished spans when trace_file is set.
    service_name: str = "examday"
    trace_file: Path | None = None

    # Resource bounds (issue #22, finding 5). Room event streams (SSE) open at once per
    # staff member, over all their sessions and gateways: a stolen or shared account
    # cannot multiply them by logging in again. Each stream checks its session and its
    # holder's access to the room this often, so a logout or an unassignment ends it
    # within that time.
    sse_streams_per_staff: int = Field(default=8, ge=1, le=1000)
    sse_recheck_seconds: float = Field(default=15.0, gt=0)
    # Talk-back listeners (WHEP) one candidate may hold at once (laptop and phone).
    talkback_listeners_per_candidate: int = Field(default=2, ge=1, le=64)

    # The exam's schedule (issue #25): candidates may log in this long before `starts_at`
    # (a waiting room: joining and publishing wait for the start, 403 `not_started`), and
    # may first join until this long after it (403 `too_late` then, unless a proctor
    # readmits them); a candidate's accommodation adds its minutes to both that cut-off
    # and the end. At the end (`ends_at`, plus any extension) the next heartbeat ends the
    # candidate's session and media (403 `exam_over`).
    login_opens_minutes_before: float = Field(default=30.0, ge=0, le=24 * 60)
    late_cutoff_minutes: float = Field(default=15.0, ge=0, le=24 * 60)

    @field_validator("public_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_origin_of(origin) for origin in value)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        # strict: "10.0.0.1/8" is a typo for a host or a network, and trusting the wrong
        # one lets clients pick their own address.
        return [str(ipaddress.ip_network(item.strip(), strict=True)) for item in value]

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> Settings:
        # Only a laptop may run on the published dev keys: a test or staging stack with
        # them is one copied config away from production.
        if self.env != "development":
            weak = self._weak_secrets()
            if weak:
                raise ValueError(
                    "placeholder secrets or keys under 32 bytes outside development: "
                    + ", ".join(weak)
                )
        if self.env == "production":
            missing = [
                name
                for name, value in (
                    ("ops.metrics_token", self.ops.metrics_token),
                    ("update_signing_key", self.update_signing_key),
                    ("audit_signing_key", self.audit_signing_key),
                    ("public_origins", self.public_origins),
                )
                if not value
            ]
            if missing:
                raise ValueError(f"production requires {', '.join(missing)}")
            if self.turn.embedded and not self.turn.urls:
                # The embedded relay listens on loopback: no candidate at home reaches it.
                raise ValueError(
                    "production requires turn.urls (a TURN cluster) or turn.embedded=false"
                )
        if not self.regions:
            raise ValueError("at least one region is required")
        for name, region in (
            ("ingest.default_region", self.ingest.default_region),
            ("updates.installer_region", self.updates.installer_region),
        ):
            if region not in self.regions:
                raise ValueError(f"{name} {region!r} is not a configured region")
        return self

    def _weak_secrets(self) -> list[str]:
        """Names (never values) of the secrets that are placeholders or too short."""
        weak = []
        for name, secret, decoded in (
            ("token_signing_key", self.token_signing_key, False),
            ("pseudonym_key", self.pseudonym_key, False),
            ("data_master_key", self.data_master_key, True),
            ("update_signing_key", self.update_signing_key, True),
            ("audit_signing_key", self.audit_signing_key, True),
            ("ops.metrics_token", self.ops.metrics_token, False),
            ("turn.shared_secret", self.turn.shared_secret, False),
        ):
            if secret is not None and not _strong(secret.get_secret_value(), decoded):
                weak.append(name)
        previous = self.data_master_keys_previous
        if previous is not None and not all(
            _strong(part.strip(), True) for part in previous.get_secret_value().split(",")
        ):
            weak.append("data_master_keys_previous")
        # S3 credentials are as short as the store makes them: only placeholders are refused.
        weak += [
            f"regions.{region}.{part}"
            for region, store in self.regions.items()
            for part in ("access_key", "secret_key")
            if getattr(store, part).get_secret_value().startswith(PLACEHOLDER_PREFIXES)
        ]
        return weak

    # Derived values: computed, never configured twice.
    @property
    def allowed_origins(self) -> frozenset[str]:
        """The origins whose pages may use the session cookie to change state."""
        if self.public_origins:
            return frozenset(self.public_origins)
        origins = {_origin_of(self.gateway_url)}
        if self.gateway_host in ("127.0.0.1", "::1"):
            origins.add(f"http://localhost:{self.gateway_port}")
        return frozenset(origins)

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


def _strong(value: str, decoded: bool) -> bool:
    """Not a placeholder, and at least 32 bytes (of key material, for base64 keys)."""
    if value.startswith(PLACEHOLDER_PREFIXES):
        return False
    if not decoded:
        return len(value.encode()) >= MIN_KEY_BYTES
    try:
        key = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError:
        return False
    return len(key) >= MIN_KEY_BYTES


def _origin_of(url: str) -> str:
    """`url` as a browser's `Origin` header spells it: scheme://host[:port], lowercase,
    the scheme's default port left out."""
    parsed = urlparse(url.strip().lower().rstrip("/"))
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"an origin is http(s)://host[:port], not {url!r}")
    if parsed.path or parsed.query or parsed.fragment or parsed.username or parsed.password:
        raise ValueError(f"an origin has no path, query or credentials: {url!r}")
    port = parsed.port
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    default = {"http": 80, "https": 443}[parsed.scheme]
    return f"{parsed.scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


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
    if isinstance(value, date):  # datetimes too: JSON has no dates
        return value.isoformat()
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
