"""Settings of cluster operations: logs, the metrics endpoint and the room shard controller."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator


class OpsSettings(BaseModel):
    # Log lines of the gateway and the actors: JSON with trace and span ids, or left as
    # the host process writes them. Unset: JSON, except in test runs (readable output).
    log_format: Literal["json", "text"] | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # `GET /metrics`: a bearer token Prometheus must send (unset: open, for a scrape
    # inside the cluster network only), and bounds on what one scrape may ask for.
    metrics_token: SecretStr | None = None
    metrics_max_rooms: int = Field(default=2000, ge=0, le=100_000)
    metrics_timeout_s: float = Field(default=5.0, gt=0, le=60)
    metrics_concurrency: int = Field(default=16, ge=1, le=256)
    # The room shard controller: bounds, the load it aims for, and how often it may act.
    controller_min_shards: int = Field(default=2, ge=1, le=256)
    controller_max_shards: int = Field(default=32, ge=1, le=256)
    controller_rooms_high: int = Field(default=200, ge=1)
    controller_rooms_low: int = Field(default=50, ge=0)
    controller_interval_s: float = Field(default=15.0, gt=0)
    controller_cooldown_s: float = Field(default=120.0, ge=0)
    # At least this many shards per live node offering the plane's resource (room_shard,
    # media, ingest), so that the planes grow and shrink with the cluster; 0: off.
    controller_room_shards_per_node: int = Field(default=0, ge=0, le=64)
    controller_media_shards_per_node: int = Field(default=0, ge=0, le=64)
    controller_ingest_shards_per_node: int = Field(default=0, ge=0, le=64)
    # The media shards, by WebRTC sessions per shard (a shard takes up to
    # EXAMDAY_MEDIA__MAX_SESSIONS); a shard removed tells its rooms to reconnect
    # elsewhere and gets this long for its clients to leave before it stops.
    controller_media_min_shards: int = Field(default=1, ge=1, le=256)
    controller_media_max_shards: int = Field(default=16, ge=1, le=256)
    controller_media_sessions_high: int = Field(default=200, ge=1)
    controller_media_sessions_low: int = Field(default=50, ge=0)
    controller_media_drain_s: float = Field(default=60.0, gt=0)
    # The log ingest shards, by records acknowledged and not yet flushed per shard.
    controller_ingest_min_shards: int = Field(default=1, ge=1, le=64)
    controller_ingest_max_shards: int = Field(default=16, ge=1, le=64)
    controller_ingest_backlog_high: int = Field(default=20_000, ge=1)
    controller_ingest_backlog_low: int = Field(default=1_000, ge=0)
    # `examday up` starts the controller's loop; off, the shards stay as they are until
    # `examday cluster autoscale` or `examday cluster shards`.
    controller_autostart: bool = True

    @model_validator(mode="after")
    def _bounds(self) -> OpsSettings:
        if self.controller_min_shards > self.controller_max_shards:
            raise ValueError("controller_min_shards must not exceed controller_max_shards")
        if self.controller_rooms_low >= self.controller_rooms_high:
            raise ValueError("controller_rooms_low must be below controller_rooms_high")
        if self.controller_media_min_shards > self.controller_media_max_shards:
            raise ValueError(
                "controller_media_min_shards must not exceed controller_media_max_shards"
            )
        if self.controller_ingest_min_shards > self.controller_ingest_max_shards:
            raise ValueError(
                "controller_ingest_min_shards must not exceed controller_ingest_max_shards"
            )
        if self.controller_ingest_backlog_low >= self.controller_ingest_backlog_high:
            raise ValueError(
                "controller_ingest_backlog_low must be below controller_ingest_backlog_high"
            )
        if self.controller_media_sessions_low >= self.controller_media_sessions_high:
            raise ValueError(
                "controller_media_sessions_low must be below controller_media_sessions_high"
            )
        return self
