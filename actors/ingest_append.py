"""Appending a batch of client records to a shard's Redis Stream, scrubbed and pseudonymised.

One Lua script does, atomically: the device's rate budget, the backlog bound,
de-duplication by record id (a set per shard and time bucket), the live
aggregates (crash counts, sessions and crashed sessions as HyperLogLogs,
usage counters) and one XADD holding the accepted records as NDJSON. A
record is acknowledged only once that XADD has happened; a refused batch
(rate, backlog) changes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from actors import ingest_keys as keys
from actors.ingest_batch import decode
from actors.ingest_schema import RecordIn
from actors.ingest_settings import IngestSettings
from infra.errors import RateLimited, Unavailable
from infra.pseudonym import Pseudonyms
from infra.redis import text
from infra.scrub import Scrubber

_APPEND = """
local n = tonumber(ARGV[5])
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
if used + n > tonumber(ARGV[1]) then
  local ttl = redis.call('TTL', KEYS[2])
  if ttl < 1 then ttl = tonumber(ARGV[2]) end
  return {'rate', tostring(ttl)}
end
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[4]) then return {'backlog', '1'} end
if used == 0 then
  redis.call('SET', KEYS[2], n, 'EX', ARGV[2])
else
  redis.call('INCRBY', KEYS[2], n)
end
local nh, nd = tonumber(ARGV[9]), tonumber(ARGV[10])
for i = 1, nh do redis.call('PFADD', KEYS[7 + i], ARGV[10 + i]) end
for i = 1, nd do redis.call('SADD', KEYS[7], ARGV[10 + nh + i]) end
local base = 10 + nh + nd
local lines, flags, counted = {}, {}, false
for i = 0, n - 1 do
  local at = base + 5 * i
  local rid = ARGV[at + 1]
  if redis.call('SISMEMBER', KEYS[4], rid) == 1 or redis.call('SADD', KEYS[3], rid) == 0 then
    flags[#flags + 1] = '0'
  else
    flags[#flags + 1] = '1'
    lines[#lines + 1] = ARGV[at + 2]
    local op = ARGV[at + 3]
    if op == 'c' then
      redis.call('HINCRBY', KEYS[5], ARGV[at + 4], 1)
      redis.call('HINCRBY', KEYS[5], ARGV[at + 5], 1)
    elseif op == 'm' then
      redis.call('HINCRBY', KEYS[6], ARGV[at + 4], 1)
      if ARGV[at + 5] ~= '' then
        redis.call('HINCRBYFLOAT', KEYS[6], ARGV[at + 4] .. '|sum', ARGV[at + 5])
      end
      counted = true
    end
  end
end
redis.call('EXPIRE', KEYS[3], ARGV[3])
if counted then redis.call('EXPIRE', KEYS[6], ARGV[11 + nh + nd + 5 * n] or 34560000) end
local id = ''
if #lines > 0 then
  local body = table.concat(lines, '\\n')
  id = redis.call('XADD', KEYS[1], '*', 'r', body, 'x', ARGV[6], 'g', ARGV[7], 't', ARGV[8])
end
return {'ok', id, table.concat(flags)}
"""


@dataclass(frozen=True)
class IngestBatch:
    """A batch as the gateway hands it to the shard its device hashes to: inflated, unparsed."""

    data: bytes
    kind: str  # "json" (an array) or "ndjson"
    region: str
    exam: str | None
    # Literals to scrub wherever they appear: the caller's token, the candidate's
    # name and numbers. They live in memory only for this call.
    secrets: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Prepared:
    device: str  # pseudonym
    records: int
    keys: list[str]
    args: list[str]


@dataclass(frozen=True)
class AppendResult:
    device: str
    accepted: int
    duplicates: int
    entry_id: str


def record_id(device: str, record: RecordIn) -> str:
    """A client that sends no id gets one from the content, so that a resent record dedupes."""
    parts = (record.session_id, record.kind, record.time, record.level, record.message)
    more = (record.stack, record.name, record.value, device)
    content = "\x1f".join(str(part) for part in (*parts, *more))
    return hashlib.blake2b(content.encode(), digest_size=16).hexdigest()


class Appender:
    """Validates, scrubs and appends batches to one shard's stream."""

    def __init__(
        self, redis: Redis, settings: IngestSettings, pseudonyms: Pseudonyms, shard: str
    ) -> None:
        self.settings = settings
        self.pseudonyms = pseudonyms
        self.shard = shard
        self.stream = keys.stream_key(shard)
        self._script = redis.register_script(_APPEND)

    def prepare(self, batch: IngestBatch, received: float) -> Prepared:
        """Parse, validate, scrub and lay out the script's arguments: CPU work, off the loop."""
        records = decode(batch.data, batch.kind, self.settings)
        device_id = records[0].device_id
        device = self.pseudonyms.device(device_id)
        scrubber = Scrubber.for_batch(device_id=device_id, **batch.secrets)
        day = datetime.fromtimestamp(received, UTC).strftime("%Y-%m-%d")
        sessions: dict[tuple[str, str], bool] = {}
        rows: list[str] = []
        for record in records:
            session = self.pseudonyms.session(record.session_id) if record.session_id else ""
            line = _line(device, session, record, received, scrubber)
            platform, version, model = record.os, record.app_version, record.model
            op, first, second = "", "", ""
            if record.kind == "crash":
                op, first, second = (
                    "c",
                    keys.dim(platform, version, model),
                    keys.dim(platform, version),
                )
            elif record.kind == "metric":
                op, first = "m", f"{record.name}|{platform}|{version}"
                second = "" if record.value is None else repr(record.value)
            if session:
                crashed = record.kind == "crash"
                for dimension in (keys.dim(platform, version, model), keys.dim(platform, version)):
                    sessions[(dimension, session)] = sessions.get((dimension, session)) or crashed
            rows += [f"{device}:{line['id']}", _dumps(line), op, first, second]
        hll_keys, hll_args = [], []
        for (dimension, session), crashed in sessions.items():
            hll_keys.append(keys.sessions_key(dimension))
            hll_args.append(session)
            if crashed:
                hll_keys.append(keys.crashed_key(dimension))
                hll_args.append(session)
        dims = sorted({dimension for dimension, _ in sessions})
        bucket = int(received // self.settings.dedupe_seconds)
        s = self.settings
        script_keys = [
            self.stream,
            keys.rate_key(device),
            keys.seen_key(self.shard, bucket),
            keys.seen_key(self.shard, bucket - 1),
            keys.CRASHES,
            keys.analytics_key(day),
            keys.DIMS,
            *hll_keys,
        ]
        args = [
            str(s.device_records_per_window),
            str(s.device_window_seconds),
            str(2 * s.dedupe_seconds),
            str(s.max_backlog_entries),
            str(len(records)),
            batch.exam or "",
            batch.region,
            repr(received),
            str(len(hll_keys)),
            str(len(dims)),
            *hll_args,
            *dims,
            *rows,
            str(keys.ANALYTICS_TTL_SECONDS),
        ]
        return Prepared(device, len(records), script_keys, args)

    async def append(self, batch: IngestBatch, received: float) -> AppendResult:
        prepared = await asyncio.to_thread(self.prepare, batch, received)
        reply: Any = await self._script(keys=prepared.keys, args=prepared.args)
        status = text(reply[0])
        if status == "rate":
            raise RateLimited(
                "this device sent too many records; wait before sending more",
                reason="device_rate_limited",
                retry_after=float(text(reply[1])),
            )
        if status == "backlog":
            raise Unavailable(
                "log ingestion is behind; try again shortly", reason="ingest_backlog", retry_after=5
            )
        accepted = text(reply[2]).count("1")
        return AppendResult(prepared.device, accepted, prepared.records - accepted, text(reply[1]))


_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _line(
    device: str, session: str, record: RecordIn, received: float, scrubber: Scrubber
) -> dict[str, Any]:
    line: dict[str, Any] = {
        "id": record.id or record_id(device, record),
        "kind": record.kind,
        "time": record.epoch(),
        "received": received,
        "level": record.level,
        "message": scrubber.scrub(record.message),
        "os": record.os,
        "os_version": record.os_version,
        "model": record.model,
        "app_version": record.app_version,
    }
    if record.kind == "metric":
        # Usage analytics carry no identity at all: no device, no session, no candidate.
        line["name"] = record.name
        line["value"] = record.value
        return line
    line["device"] = device
    if session:
        line["session"] = session
    if record.stack:
        line["stack"] = scrubber.scrub(record.stack)
    if record.breadcrumbs:
        line["breadcrumbs"] = [
            {
                "time": _epoch(crumb.time),
                "category": scrubber.scrub(crumb.category),
                "message": scrubber.scrub(crumb.message),
            }
            for crumb in record.breadcrumbs
        ]
    return line


def _epoch(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
