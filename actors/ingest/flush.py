"""Flushing shard streams to the object store: at least once, and each record once.

A consumer (of the group `flush`) takes entries, by XREADGROUP or by
XAUTOCLAIM from a consumer that went quiet, and then:

1. commits a plan in Redis (one Lua script): every entry not yet in a plan,
   and still in the stream, is marked with the new plan id; entries already
   marked belong to a plan some consumer started and did not finish;
2. writes one object per (target, kind, hour) of the plan; the object's key
   and bytes follow from the plan id and the entries alone, so writing it
   again gives the same object;
3. updates the support index, then acknowledges and deletes the entries and
   the plan, in one transaction.

A consumer that dies anywhere in between leaves marked, pending entries;
whoever claims them finds the plan and redoes it exactly, overwriting the
same keys: nothing is lost and nothing appears twice.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from actors.ingest.append import KINDS
from actors.ingest.sink import LogObject, LogSink
from core import keys
from infra.redis import text
from infra.settings.ingest import IngestSettings

_CLAIM_PAGES = 20
_PARALLEL_WRITES = 8
# Logs compress well at any level; the fastest keeps the flush cheap.
_GZIP_LEVEL = 1

_COMMIT = """
local taken, free = {}, {}
for i = 2, #ARGV do
  local owner = redis.call('HGET', KEYS[1], ARGV[i])
  if owner then
    taken[owner] = true
  elseif #redis.call('XRANGE', KEYS[3], ARGV[i], ARGV[i]) > 0 then
    free[#free + 1] = ARGV[i]
  end
end
if #free > 0 then
  for _, id in ipairs(free) do redis.call('HSET', KEYS[1], id, ARGV[1]) end
  redis.call('SET', KEYS[2], cjson.encode({stream = KEYS[3], entries = free}))
end
local out = {table.concat(free, ' ')}
for owner in pairs(taken) do out[#out + 1] = owner end
return out
"""


@dataclass(frozen=True)
class Entry:
    """One appended batch: accepted records (NDJSON) and what the flush needs to know of them."""

    id: str
    body: str
    kinds: str  # one code a record: l(og), c(rash), m(etric)
    ids: list[str]
    device: str  # pseudonym; one device a batch
    sessions: list[str]
    latest: float  # latest record time
    exam: str | None
    region: str
    received: float

    @classmethod
    def parse(cls, entry_id: Any, fields: dict[Any, Any]) -> Entry:
        values = {text(k): text(v) for k, v in fields.items()}
        return cls(
            id=text(entry_id),
            body=values["r"],
            kinds=values["k"],
            ids=values["i"].split("\n"),
            device=values["d"],
            sessions=values["s"].split(),
            latest=float(values["m"]),
            exam=values["x"] or None,
            region=values["g"],
            received=float(values["t"]),
        )

    @property
    def order(self) -> tuple[int, int]:
        ms, seq = self.id.split("-")
        return int(ms), int(seq)


@dataclass(frozen=True)
class Plan:
    id: str
    stream: str
    entries: list[Entry]


Grouped = dict[LogObject, list[str]]


class LogFlusher:
    def __init__(
        self, redis: Redis, sink: LogSink, settings: IngestSettings, consumer: str
    ) -> None:
        self.redis = redis
        self.sink = sink
        self.settings = settings
        self.consumer = consumer
        self.records_written = 0
        self.plans_redone = 0
        self.entries_claimed = 0
        self._commit = redis.register_script(_COMMIT)

    async def ensure_group(self, stream: str) -> None:
        try:
            await self.redis.xgroup_create(stream, keys.INGEST_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # -- taking entries ------------------------------------------------------

    async def read_new(self, stream: str, block_ms: int | None = None) -> list[Entry]:
        reply: Any = await self.redis.xreadgroup(
            keys.INGEST_GROUP,
            self.consumer,
            {stream: ">"},
            count=self.settings.flush_max_entries,
            block=block_ms,
        )
        return [Entry.parse(i, f) for _, batch in reply or [] for i, f in batch if f]

    async def claim_stale(self, stream: str, min_idle_ms: int) -> list[Entry]:
        """Take over entries another consumer has held for `min_idle_ms` (XAUTOCLAIM)."""
        claimed: list[Entry] = []
        cursor = "0-0"
        for _ in range(_CLAIM_PAGES):
            reply: Any = await self.redis.xautoclaim(
                stream,
                keys.INGEST_GROUP,
                self.consumer,
                min_idle_ms,
                cursor,
                count=self.settings.flush_max_entries,
            )
            cursor = text(reply[0])
            claimed += [Entry.parse(i, f) for i, f in reply[1] if f]
            if cursor == "0-0" or len(claimed) >= self.settings.flush_max_entries:
                break
        self.entries_claimed += len(claimed)
        return claimed

    async def forget_consumers(self, stream: str, idle_ms: int) -> int:
        """Remove consumers (dead incarnations) that hold nothing and have been quiet long."""
        consumers: Any = await self.redis.xinfo_consumers(stream, keys.INGEST_GROUP)
        gone = 0
        for consumer in consumers:
            name = text(consumer["name"])
            if name != self.consumer and consumer["pending"] == 0 and consumer["idle"] > idle_ms:
                await self.redis.xgroup_delconsumer(stream, keys.INGEST_GROUP, name)
                gone += 1
        return gone

    # -- the protocol -----------------------------------------------------------

    async def flush(self, stream: str, entries: list[Entry]) -> int:
        plan, taken = await self.commit(stream, entries)
        written = 0
        for plan_id in taken:
            written += await self.redo(plan_id)
        if plan is not None:
            written += await self.execute(plan)
        return written

    async def commit(self, stream: str, entries: list[Entry]) -> tuple[Plan | None, list[str]]:
        """Step 1: mark free entries with a new plan; name the plans that hold the others."""
        if not entries:
            return None, []
        plan_id = uuid.uuid4().hex[:20]
        reply: Any = await self._commit(
            keys=[keys.ingest_marks_key(stream), keys.ingest_plan_key(plan_id), stream],
            args=[plan_id, *(entry.id for entry in entries)],
        )
        free = set(text(reply[0]).split())
        taken = sorted(text(owner) for owner in reply[1:])
        if not free:
            return None, taken
        return Plan(plan_id, stream, [e for e in entries if e.id in free]), taken

    def group(self, plan: Plan) -> Grouped:
        """The plan's objects: records by (target, kind, hour), first copy of each id kept."""
        grouped: Grouped = {}
        seen: set[tuple[str, str]] = set()
        for entry in sorted(plan.entries, key=lambda e: e.order):
            hour = datetime.fromtimestamp(entry.received, UTC).strftime("%Y-%m-%dT%H")
            targets: dict[str, list[str]] = {}
            for raw, code, rid in zip(entry.body.split("\n"), entry.kinds, entry.ids, strict=True):
                if (entry.device, rid) in seen:
                    continue
                seen.add((entry.device, rid))
                lines = targets.get(code)
                if lines is None:
                    target = LogObject(entry.exam, entry.region, KINDS[code], hour, plan.id)
                    lines = targets[code] = grouped.setdefault(target, [])
                lines.append(raw)
        return grouped

    async def write(self, target: LogObject, lines: list[str]) -> str:
        """Step 2, one object: gzip NDJSON with a fixed header time, so a redo is byte-equal."""
        payload = ("\n".join(lines) + "\n").encode()
        body = await asyncio.to_thread(gzip.compress, payload, _GZIP_LEVEL, mtime=0)
        return await self.sink.write(target, body)

    async def index(self, plan: Plan, stored: dict[LogObject, str]) -> None:
        """Which objects hold a pseudonymised device's or session's records, for support.

        One entry per (device or session, object), scored by the latest record time
        in it; the records themselves stay in the regional store only.
        """
        s = self.settings
        hours = {
            e.id: datetime.fromtimestamp(e.received, UTC).strftime("%Y-%m-%dT%H")
            for e in plan.entries
        }
        latest: dict[str, dict[str, float]] = {}
        for entry in plan.entries:
            for code in set(entry.kinds) - {"m"}:  # usage metrics carry no identity
                target = LogObject(entry.exam, entry.region, KINDS[code], hours[entry.id], plan.id)
                if target not in stored:
                    continue
                member = f"{target.region}|{stored[target]}"
                scope = entry.exam or keys.ANONYMOUS
                subjects = [("d", entry.device)] + [("s", session) for session in entry.sessions]
                for by, value in subjects:
                    found = latest.setdefault(keys.ingest_support_key(scope, by, value), {})
                    found[member] = max(found.get(member, 0.0), entry.latest)
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, members in latest.items():
                pipe.zadd(key, members, gt=True)
                pipe.zremrangebyrank(key, 0, -(s.support_objects + 1))
                pipe.expire(key, s.support_ttl_seconds)
            await pipe.execute()

    async def finish(self, plan: Plan) -> None:
        """Step 3: acknowledge, delete the entries and forget the plan, all at once."""
        ids = [entry.id for entry in plan.entries]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(plan.stream, keys.INGEST_GROUP, *ids)
            pipe.xdel(plan.stream, *ids)
            pipe.hdel(keys.ingest_marks_key(plan.stream), *ids)
            pipe.delete(keys.ingest_plan_key(plan.id))
            await pipe.execute()

    async def execute(self, plan: Plan) -> int:
        grouped = await asyncio.to_thread(self.group, plan)
        limit = asyncio.Semaphore(_PARALLEL_WRITES)

        stored: dict[LogObject, str] = {}

        async def bounded(target: LogObject, lines: list[str]) -> None:
            async with limit:
                stored[target] = await self.write(target, lines)

        await asyncio.gather(*(bounded(t, lines) for t, lines in grouped.items()))
        await self.index(plan, stored)
        await self.finish(plan)
        written = sum(len(records) for records in grouped.values())
        self.records_written += written
        return written

    async def redo(self, plan_id: str) -> int:
        """Finish a plan another consumer started: the same entries, the same objects."""
        raw = await self.redis.get(keys.ingest_plan_key(plan_id))
        if raw is None:
            return 0
        spec = json.loads(raw)
        stream = str(spec["stream"])
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(keys.ingest_plan_key(plan_id))
            for entry_id in spec["entries"]:
                pipe.xrange(stream, entry_id, entry_id)
            found: list[Any] = await pipe.execute()
        if found[0] is None:  # finished meanwhile
            return 0
        entries = [Entry.parse(*rows[0]) for rows in found[1:] if rows]
        self.plans_redone += 1
        return await self.execute(Plan(plan_id, stream, entries))
