"""Knobs of client log ingestion (`actors.ingest.shard` and the gateway's `actors.ingest.client`).

The project `Settings` nests one `IngestSettings` as `EXAMDAY_INGEST__*`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class IngestSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # LogIngest actors (placed by the `ingest` resource) the gateway makes sure exist.
    shards: int = Field(default=2, ge=1, le=64)
    # Batches without a candidate's token (a crash at start-up) are stored here.
    default_region: str = "cn-north"

    # Limits of one batch: records, bytes once decompressed (a gzip bomb stops
    # here), and the free text of one record (message, stack, breadcrumbs).
    max_batch_records: int = Field(default=1000, ge=1, le=5000)
    max_batch_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_record_bytes: int = Field(default=64 * 1024, ge=256)

    # Records one device may send per window before 429 with Retry-After.
    device_records_per_window: int = Field(default=6000, ge=1)
    device_window_seconds: int = Field(default=60, ge=1)
    # A record id seen within this time (and at most twice it) is acknowledged again but
    # not stored twice: long enough for client retries, short enough for Redis memory.
    dedupe_seconds: int = Field(default=600, ge=60)
    # Unflushed stream entries (batches) per shard before 503 with Retry-After.
    max_backlog_entries: int = Field(default=50_000, ge=10)

    # Flushing to the object store: entries per read, how long a read waits,
    # and how long a consumer may hold entries before another one claims them.
    flush_max_entries: int = Field(default=200, ge=1, le=10_000)
    flush_block_ms: int = Field(default=500, ge=10, le=5000)
    claim_idle_seconds: float = Field(default=10.0, gt=0)

    # Distinct aggregate dimensions (platform x app version x device model, and each
    # version over all models) counted at most; usage fields of one day likewise.
    # Only batches with a candidate's token count at all.
    max_dimensions: int = Field(default=5000, ge=10)

    # Support index: the latest objects holding a pseudonymised device's or session's
    # records (the records themselves stay in the regional store), kept this long.
    support_objects: int = Field(default=500, ge=10)
    support_ttl_seconds: int = Field(default=3 * 86400, ge=60)
