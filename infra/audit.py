"""An append-only, hash-chained audit log per region, stored in that region's bucket.

Each entry is one object `_audit/{seq:012d}.json` in the region's bucket (the
retention sweeper never touches `_audit/`), holding the hash of the entry
before it; its own hash is the SHA-256 of its canonical JSON without the
`hash` field. The chain head (last seq and hash) lives in Redis. An entry
carries an `entry_id` chosen by the writer: appending the same id again
returns the entry written before (a run resumed after a crash does not
receipt twice). Appends of one region are serialised by a Redis lock.

    {"seq": 7, "prev": "<hash of 6>", "entry_id": "...", "kind": "deletion",
     "exam": "...", "at": 1767000000.0, "body": {...}, "hash": "<sha256>"}
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError
from redis.asyncio import Redis

from infra.errors import Unavailable
from infra.names import StateNames
from infra.objectstore import ObjectStores
from infra.redis import text

PREFIX = "_audit/"
GENESIS = "0" * 64
_LOCK_SECONDS = 30
_LOCK_ATTEMPTS = 400
_MAX_PAGES = 10_000

# Moves the head and records the entry id in one step, only from the expected head.
_ADVANCE = """
local head = redis.call('HGET', KEYS[1], 'seq')
if (head or '0') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'seq', ARGV[2], 'hash', ARGV[3])
redis.call('HSET', KEYS[2], ARGV[4], ARGV[2])
if ARGV[5] ~= '' then redis.call('RPUSH', KEYS[3], ARGV[2]) end
return 1
"""


_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def object_key(seq: int) -> str:
    return f"{PREFIX}{seq:012d}.json"


def entry_hash(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    hash: str
    entry: dict[str, Any]


class AuditLog:
    def __init__(self, stores: ObjectStores, redis: Redis, region: str, names: StateNames) -> None:
        self.stores = stores
        self.redis = redis
        self.region = region
        self.bucket = stores.bucket(region)  # unknown region: NotFound now, not later
        self.base = base = names.audit_log(region)
        self.head_key, self.ids_key, self.lock_key = f"{base}:head", f"{base}:ids", f"{base}:lock"
        self._advance = redis.register_script(_ADVANCE)
        self._release = redis.register_script(_RELEASE)

    def exam_index(self, exam_id: str) -> str:
        return f"{self.base}:exam:{exam_id}"

    async def head(self) -> tuple[int, str]:
        raw = await self.redis.hgetall(self.head_key)
        if not raw:
            return 0, GENESIS
        return int(raw[b"seq"]), text(raw[b"hash"])

    async def append(
        self, kind: str, body: dict[str, Any], *, exam: str | None = None, entry_id: str = ""
    ) -> AuditEntry:
        entry_id = entry_id or uuid.uuid4().hex
        token = await self._lock()
        try:
            seq, prev = await self.head()
            if seq == 0:
                seq, prev = await self.recover_head()
            written = await self.redis.hget(self.ids_key, entry_id)
            if written is not None:
                return await self.read(int(written))
            entry: dict[str, Any] = {
                "seq": seq + 1,
                "prev": prev,
                "entry_id": entry_id,
                "kind": kind,
                "region": self.region,
                "exam": exam,
                "at": time.time(),
                "body": body,
            }
            entry["hash"] = entry_hash(entry)
            await self._write(seq + 1, entry)
            keys = [self.head_key, self.ids_key, self.exam_index(exam or "")]
            args = [str(seq), str(seq + 1), entry["hash"], entry_id, exam or ""]
            if not await self._advance(keys=keys, args=args):
                raise Unavailable("the audit chain moved under its lock", reason="audit_busy")
            return AuditEntry(seq + 1, entry["hash"], entry)
        finally:
            await self._unlock(token)

    async def _write(self, seq: int, entry: dict[str, Any]) -> None:
        # A crash after this write and before the head moves leaves an orphan that
        # the next append of the same seq overwrites (its latest version wins).
        await self.stores.call(
            self.region,
            "put_object",
            Bucket=self.bucket,
            Key=object_key(seq),
            Body=json.dumps(entry, sort_keys=True).encode(),
            ContentType="application/json",
            ServerSideEncryption="AES256",
            Metadata={"data-class": "audit"},
        )

    async def read(self, seq: int) -> AuditEntry:
        response = await self.stores.call(
            self.region, "get_object", Bucket=self.bucket, Key=object_key(seq)
        )
        raw: bytes = await self.stores.run(response["Body"].read)
        entry: dict[str, Any] = json.loads(raw)
        return AuditEntry(int(entry["seq"]), str(entry.get("hash", "")), entry)

    async def exam_entries(self, exam_id: str, limit: int = 1000) -> list[AuditEntry]:
        seqs = await self.redis.lrange(self.exam_index(exam_id), -limit, -1)
        return [await self.read(int(s)) for s in seqs]

    async def _lock(self) -> str:
        token = uuid.uuid4().hex
        for _ in range(_LOCK_ATTEMPTS):
            if await self.redis.set(self.lock_key, token, nx=True, ex=_LOCK_SECONDS):
                return token
            await asyncio.sleep(0.025)
        raise Unavailable("the audit log is busy", reason="audit_busy", retry_after=1)

    async def _unlock(self, token: str) -> None:
        await self._release(keys=[self.lock_key], args=[token])

    async def recover_head(self) -> tuple[int, str]:
        """Redis lost the head (a flush, a new Redis): take it from the last stored entry."""
        last = 0
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": PREFIX}
        for _ in range(_MAX_PAGES):
            page = await self.stores.call(self.region, "list_objects_v2", **params)
            for item in page.get("Contents", []):
                last = max(last, _seq_of(str(item["Key"])))
            if not page.get("IsTruncated"):
                break
            params["ContinuationToken"] = page["NextContinuationToken"]
        if last == 0:
            return 0, GENESIS
        entry = await self.read(last)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.head_key, mapping={"seq": last, "hash": entry.hash})
            pipe.hset(self.ids_key, str(entry.entry.get("entry_id")), last)
            await pipe.execute()
        return last, entry.hash


def _seq_of(key: str) -> int:
    name = key.removeprefix(PREFIX).removesuffix(".json")
    return int(name) if name.isdigit() else 0


@dataclass
class ChainReport:
    region: str
    head: int
    entries: list[dict[str, Any]]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


async def verify_chain(log: AuditLog) -> ChainReport:
    """Read every entry up to the head: each must hash to itself and name its predecessor."""
    head_seq, head_hash = await log.head()
    report = ChainReport(log.region, head_seq, [], [])
    prev = GENESIS
    for seq in range(1, head_seq + 1):
        try:
            entry = (await log.read(seq)).entry
        except (ValueError, KeyError) as exc:
            report.problems.append(f"entry {seq} is not valid JSON: {type(exc).__name__}")
            return report
        except ClientError:
            report.problems.append(f"entry {seq} is missing")
            return report
        if entry.get("seq") != seq or entry.get("prev") != prev:
            report.problems.append(f"entry {seq} does not follow entry {seq - 1}")
        if entry_hash(entry) != entry.get("hash"):
            report.problems.append(f"entry {seq} does not match its hash")
        prev = str(entry.get("hash"))
        report.entries.append(entry)
    if prev != head_hash:
        report.problems.append("the last entry is not the recorded chain head")
    return report
