"""Appending a batch of client records to a shard's Redis Stream, scrubbed and pseudonymised.

One Lua script does, atomically: the device's rate budget, the backlog bound,
de-duplication by record id (a set per shard and time bucket), the live
aggregates (crash counts, sessions and crashed sessions as HyperLogLogs,
usage counters) and one XADD holding the accepted records as NDJSON, with
what the flush needs to know without parsing them (kinds, ids, device,
sessions, latest time). A record is acknowledged only once that XADD has
happened; a refused batch (rate, backlog) changes nothing.

Only a batch bound to a candidate's session (a valid token, so an exam) feeds the
aggregates the crash gate and the usage report read: an anonymous batch is stored
and searchable, but counts nowhere, so made-up sessions, crashes or versions cannot
move the gate. And the distinct dimensions (platform x version x model) are capped
at `max_dimensions`, version totals admitted before models: past the cap a new
dimension is not counted at all (nor is a new usage field of the day).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from actors.ingest.batch import decode, decompress
from actors.ingest.schema import RecordIn
from core import keys
from infra.errors import RateLimited, Unavailable
from infra.pseudonym import Pseudonyms
from infra.redis import text
from infra.scrub import Scrubber
from infra.settings.ingest import IngestSettings

# ARGV: 1 limit, 2 window, 3 seen ttl, 4 max backlog, 5 n, 6 exam, 7 region, 8 received,
# 9 #hll, 10 #dims, 11 #ops, 12 usage ttl, 13 lines, 14 kinds, 15 ids, 16 device,
# 17 sessions, 18 latest time, 19 dedupe digests (24 hex characters a record), 20 the most
# dimensions (and usage fields a day); then dims, hll (dimension, member) pairs, ops
# (index, op, f1, f2). Records travel joined in a few arguments, and
# the sets are asked in bulk: one argument or one call per record costs more than the rest.
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
local nh, nd, nops = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local cap, base = tonumber(ARGV[20]), 20
local admitted = {}
if nd > 0 then
  local wanted = {}
  for i = 1, nd do wanted[i] = ARGV[base + i] end
  local known = redis.call('SMISMEMBER', KEYS[7], unpack(wanted))
  local size = redis.call('SCARD', KEYS[7])
  for i = 1, nd do
    if known[i] == 1 then
      admitted[wanted[i]] = true
    elseif size < cap then
      redis.call('SADD', KEYS[7], wanted[i])
      size = size + 1
      admitted[wanted[i]] = true
    end
  end
end
for i = 1, nh do
  local at = base + nd + 2 * i
  if admitted[ARGV[at - 1]] then redis.call('PFADD', KEYS[7 + i], ARGV[at]) end
end
if #ARGV[19] ~= 24 * n then return redis.error_reply('digests do not match records') end
local members = {}
for i = 1, n do members[i] = string.sub(ARGV[19], 24 * i - 23, 24 * i) end
local before = redis.call('SMISMEMBER', KEYS[4], unpack(members))
local recent = redis.call('SMISMEMBER', KEYS[3], unpack(members))
local flags, dups, fresh, batch = {}, 0, {}, {}
for i = 1, n do
  local member = members[i]
  if before[i] == 1 or recent[i] == 1 or batch[member] then
    flags[i] = '0'
    dups = dups + 1
  else
    flags[i] = '1'
    batch[member] = true
    fresh[#fresh + 1] = member
  end
end
if #fresh > 0 then redis.call('SADD', KEYS[3], unpack(fresh)) end
redis.call('EXPIRE', KEYS[3], ARGV[3])
local ops = base + nd + 2 * nh
for j = 0, nops - 1 do
  local at = ops + 4 * j
  if flags[tonumber(ARGV[at + 1])] == '1' then
    if ARGV[at + 2] == 'c' then
      if admitted[ARGV[at + 3]] then redis.call('HINCRBY', KEYS[5], ARGV[at + 3], 1) end
      if admitted[ARGV[at + 4]] then redis.call('HINCRBY', KEYS[5], ARGV[at + 4], 1) end
    elseif redis.call('HEXISTS', KEYS[6], ARGV[at + 3]) == 1
        or redis.call('HLEN', KEYS[6]) < 2 * cap then
      redis.call('HINCRBY', KEYS[6], ARGV[at + 3], 1)
      if ARGV[at + 4] ~= '' then
        redis.call('HINCRBYFLOAT', KEYS[6], ARGV[at + 3] .. '|sum', ARGV[at + 4])
      end
      redis.call('EXPIRE', KEYS[6], ARGV[12])
    end
  end
end
local id = ''
if dups < n then
  local lines, kinds, ids = ARGV[13], ARGV[14], ARGV[15]
  if dups > 0 then
    local kept_lines, kept_kinds, kept_ids, i = {}, {}, {}, 0
    for line in string.gmatch(lines, '[^\\n]+') do
      i = i + 1
      if flags[i] == '1' then kept_lines[#kept_lines + 1] = line end
    end
    i = 0
    for rid in string.gmatch(ids, '[^\\n]+') do
      i = i + 1
      if flags[i] == '1' then
        kept_ids[#kept_ids + 1] = rid
        kept_kinds[#kept_kinds + 1] = string.sub(kinds, i, i)
      end
    end
    lines = table.concat(kept_lines, '\\n')
    kinds = table.concat(kept_kinds)
    ids = table.concat(kept_ids, '\\n')
  end
  id = redis.call('XADD', KEYS[1], '*', 'r', lines, 'k', kinds, 'i', ids, 'd', ARGV[16],
    's', ARGV[17], 'm', ARGV[18], 'x', ARGV[6], 'g', ARGV[7], 't', ARGV[8])
end
return {'ok', id, table.concat(flags)}
"""
_KIND_CODES = {"log": "l", "crash": "c", "metric": "m"}
KINDS = {code: kind for kind, code in _KIND_CODES.items()}


@dataclass(frozen=True)
class IngestBatch:
    """A batch as the gateway hands it to the shard its device hashes to, unparsed."""

    data: bytes
    kind: str  # "json" (an array) or "ndjson"
    region: str
    exam: str | None
    coding: str = "identity"  # of `data`: identity, gzip (as the client sent it) or zlib
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
        self.stream = keys.ingest_stream_key(shard)
        self._script = redis.register_script(_APPEND)

    def prepare(self, batch: IngestBatch, received: float) -> Prepared:
        """Parse, validate, scrub and lay out the script's arguments: CPU work, off the loop."""
        data = decompress(batch.data, batch.coding, self.settings.max_batch_bytes)
        records = decode(data, batch.kind, self.settings)
        device_id = records[0].device_id
        device = self.pseudonyms.device(device_id)
        scrubber = Scrubber.for_batch(device_id=device_id, **batch.secrets)
        day = datetime.fromtimestamp(received, UTC).strftime("%Y-%m-%d")
        # Aggregates only for records tied to a real session: a candidate's token.
        counted = batch.exam is not None
        sessions: dict[tuple[str, str], bool] = {}
        crash_dims: set[str] = set()
        batch_sessions: set[str] = set()
        lines, kinds, ids, ops = [], [], [], []
        latest = 0.0
        for index, record in enumerate(records, 1):
            session = self.pseudonyms.session(record.session_id) if record.session_id else ""
            line, rid, moment = _line(device, session, record, received, scrubber)
            lines.append(line)
            kinds.append(_KIND_CODES[record.kind])
            ids.append(rid)
            latest = max(latest, moment)
            if session:
                batch_sessions.add(session)
            if not counted:
                continue
            platform, version, model = record.os, record.app_version, record.model
            if record.kind == "crash":
                pair = [keys.dim(platform, version, model), keys.dim(platform, version)]
                ops += [str(index), "c", *pair]
                crash_dims.update(pair)
            elif record.kind == "metric":
                ops += [str(index), "m", f"{record.name}|{platform}|{version}"]
                ops.append("" if record.value is None else repr(record.value))
            if session:
                crashed = record.kind == "crash"
                for dimension in (keys.dim(platform, version, model), keys.dim(platform, version)):
                    sessions[(dimension, session)] = sessions.get((dimension, session)) or crashed
        hll_keys, hll_args = [], []
        for (dimension, session), crashed in sessions.items():
            hll_keys.append(keys.ingest_sessions_key(dimension))
            hll_args += [dimension, session]
            if crashed:
                hll_keys.append(keys.ingest_crashed_key(dimension))
                hll_args += [dimension, session]
        # Version totals (model '*', what the gate reads) first, should the cap be near.
        wanted = {dimension for dimension, _ in sessions} | crash_dims
        dims = sorted(wanted, key=lambda d: (not d.endswith("|*"), d))
        bucket = int(received // self.settings.dedupe_seconds)
        s = self.settings
        script_keys = [
            self.stream,
            keys.ingest_rate_key(device),
            keys.ingest_seen_key(self.shard, bucket),
            keys.ingest_seen_key(self.shard, bucket - 1),
            keys.INGEST_CRASHES,
            keys.analytics_key(day),
            keys.INGEST_DIMS,
            *hll_keys,
        ]
        header = [
            s.device_records_per_window,
            s.device_window_seconds,
            2 * s.dedupe_seconds,
            s.max_backlog_entries,
            len(records),
            batch.exam or "",
            batch.region,
            repr(received),
            len(hll_keys),
            len(dims),
            len(ops) // 4,
            keys.ANALYTICS_TTL_SECONDS,
            "\n".join(lines),
            "".join(kinds),
            "\n".join(ids),
            device,
            " ".join(sorted(batch_sessions)),
            repr(latest),
            "".join(_digest(device, rid) for rid in ids),
            s.max_dimensions,
        ]
        args = [str(v) for v in header] + dims + hll_args + ops
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
_text = json.JSONEncoder(ensure_ascii=False).encode


def _digest(device: str, rid: str) -> str:
    """What the de-duplication sets hold: 96 bits of (device, record id), not the ids."""
    return hashlib.blake2b(f"{device}:{rid}".encode(), digest_size=12).hexdigest()


def _line(
    device: str, session: str, record: RecordIn, received: float, scrubber: Scrubber
) -> tuple[str, str, float]:
    """(the stored JSON line, its record id, its time). Identifiers, enums and versions have
    shapes without quotes or backslashes (the schema's patterns), so only free text needs
    the JSON encoder; that keeps the per-record cost down."""
    rid = record.id or record_id(device, record)
    moment = record.epoch()
    head = (
        f'{{"id":"{rid}","kind":"{record.kind}","time":{moment!r},"received":{received!r},'
        f'"level":"{record.level}","message":{_text(scrubber.scrub(record.message))},'
        f'"os":"{record.os}","os_version":"{record.os_version}","model":"{record.model}",'
        f'"app_version":"{record.app_version}"'
    )
    if record.kind == "metric":
        # Usage analytics carry no identity at all: no device, no session, no candidate.
        value = "null" if record.value is None else repr(record.value)
        return f'{head},"name":"{record.name}","value":{value}}}', rid, moment
    parts = [head, f',"device":"{device}"']
    if session:
        parts.append(f',"session":"{session}"')
    if record.stack:
        parts.append(f',"stack":{_text(scrubber.scrub(record.stack))}')
    if record.breadcrumbs:
        crumbs = [
            {
                "time": _epoch(crumb.time),
                "category": scrubber.scrub(crumb.category),
                "message": scrubber.scrub(crumb.message),
            }
            for crumb in record.breadcrumbs
        ]
        parts.append(f',"breadcrumbs":{_dumps(crumbs)}')
    parts.append("}")
    return "".join(parts), rid, moment


def _epoch(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
