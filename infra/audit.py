"""An append-only, hash-chained, signed audit log per region, stored in that region's bucket.

Each entry is one object `_audit/{seq:012d}.json` in the region's bucket (the
retention sweeper never touches `_audit/`), holding the hash of the entry
before it; its own hash is the SHA-256 of its canonical JSON without the
`hash` and `sig` fields, and `sig` is an Ed25519 signature (infra/audit_signing.py)
over its canonical JSON with the hash. The chain head (last seq, hash and a
signature over both) lives in Redis. An entry carries an `entry_id` chosen by the
writer: appending the same id again returns the entry written before (a run
resumed after a crash does not receipt twice). Appends of one region are
serialised by a Redis lock.

Why both a signature and Object Lock: the hash chain alone can be recomputed by
anyone who can write the bucket and Redis. Each entry is written under S3 Object
Lock in COMPLIANCE mode until its signed `retain_until`, so its version can be
neither deleted nor have its retention shortened (SeaweedFS enforces both, see
docs/privacy.md); what S3 still allows on a locked key (a newer version on top,
a delete marker) and what Redis allows (moving the head back) `verify_chain`
finds by listing every version and checking the signed head.

    {"seq": 7, "prev": "<hash of 6>", "entry_id": "...", "kind": "deletion",
     "exam": "...", "at": 1767000000.0, "retain_until": "2033-...", "key_id": "...",
     "body": {...}, "hash": "<sha256>", "sig": "<ed25519, urlsafe base64>"}
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError
from redis.asyncio import Redis

from infra.audit_signing import AuditSigner, AuditVerifier, canonical, head_message
from infra.errors import Unavailable
from infra.names import StateNames
from infra.objectstore import ObjectStores
from infra.redis import text

PREFIX = "_audit/"
GENESIS = "0" * 64
LOCK_MODE = "COMPLIANCE"
_LOCK_SECONDS = 30
_LOCK_ATTEMPTS = 400
_MAX_PAGES = 10_000
_ABSENT = ("NoSuchKey", "404", "NoSuchVersion")

# Moves the head and records the entry id in one step, only from the expected head.
_ADVANCE = """
local head = redis.call('HGET', KEYS[1], 'seq')
if (head or '0') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'seq', ARGV[2], 'hash', ARGV[3], 'sig', ARGV[6], 'key_id', ARGV[7])
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
    body = {k: v for k, v in entry.items() if k not in ("hash", "sig")}
    return hashlib.sha256(canonical(body)).hexdigest()


def signed_bytes(entry: dict[str, Any]) -> bytes:
    """What an entry's signature covers: everything but the signature, its hash included."""
    return canonical({k: v for k, v in entry.items() if k != "sig"})


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    hash: str
    entry: dict[str, Any]


@dataclass(frozen=True)
class SignedHead:
    seq: int
    hash: str
    sig: str
    key_id: str


class AuditLog:
    def __init__(
        self,
        stores: ObjectStores,
        redis: Redis,
        region: str,
        names: StateNames,
        signer: AuditSigner | None = None,
    ) -> None:
        self.stores = stores
        self.redis = redis
        self.region = region
        self.bucket = stores.bucket(region)  # unknown region: NotFound now, not later
        self.base = base = names.audit_log(region)
        self.head_key, self.ids_key, self.lock_key = f"{base}:head", f"{base}:ids", f"{base}:lock"
        self._advance = redis.register_script(_ADVANCE)
        self._release = redis.register_script(_RELEASE)
        # The process's own key and lock period unless a caller (a test) brings its own.
        self.signer = signer or AuditSigner.from_settings(stores.settings)
        self.retention_days = stores.settings.privacy.audit_retention_days

    def exam_index(self, exam_id: str) -> str:
        return f"{self.base}:exam:{exam_id}"

    async def head(self) -> tuple[int, str]:
        signed = await self.signed_head()
        return (0, GENESIS) if signed is None else (signed.seq, signed.hash)

    async def signed_head(self) -> SignedHead | None:
        raw = await self.redis.hgetall(self.head_key)
        if not raw:
            return None
        return SignedHead(
            int(raw[b"seq"]),
            text(raw[b"hash"]),
            text(raw.get(b"sig", b"")),
            text(raw.get(b"key_id", b"")),
        )

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
            orphan = await self._adopt_orphan(seq, prev)
            if orphan is not None:
                if orphan.entry.get("entry_id") == entry_id:
                    return orphan
                seq, prev = orphan.seq, orphan.hash
            now = time.time()
            until = datetime.fromtimestamp(now, UTC).replace(microsecond=0) + timedelta(
                days=self.retention_days, seconds=1
            )
            entry: dict[str, Any] = {
                "seq": seq + 1,
                "prev": prev,
                "entry_id": entry_id,
                "kind": kind,
                "region": self.region,
                "exam": exam,
                "at": now,
                "retain_until": until.isoformat(),
                "key_id": self.signer.key_id,
                "body": body,
            }
            entry["hash"] = entry_hash(entry)
            entry["sig"] = self.signer.sign(signed_bytes(entry))
            await self._write(seq + 1, entry, until)
            await self._move_head(seq, entry)
            return AuditEntry(seq + 1, entry["hash"], entry)
        finally:
            await self._unlock(token)

    async def _move_head(self, from_seq: int, entry: dict[str, Any]) -> None:
        seq, digest, exam = int(entry["seq"]), str(entry["hash"]), entry.get("exam") or ""
        head_sig = self.signer.sign(head_message(self.region, seq, digest))
        keys = [self.head_key, self.ids_key, self.exam_index(exam)]
        args = [str(from_seq), str(seq), digest, str(entry["entry_id"]), exam]
        if not await self._advance(keys=keys, args=[*args, head_sig, self.signer.key_id]):
            raise Unavailable("the audit chain moved under its lock", reason="audit_busy")

    async def _adopt_orphan(self, seq: int, prev: str) -> AuditEntry | None:
        """An entry written past the head by an append that crashed before moving it.

        It is locked, so it cannot be overwritten or removed (a new version on top
        would read as a rewrite): if it is ours and follows the head, the head moves
        onto it; anything else past the head is tampering, and nothing more is appended.
        """
        try:
            orphan = await self.read(seq + 1)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in _ABSENT:
                return None
            raise
        verifier = AuditVerifier([self.signer.public_key()])
        if check_entry(orphan.entry, seq + 1, prev, verifier):
            raise Unavailable(
                f"an unverifiable entry {seq + 1} lies past the audit head of {self.region}",
                reason="audit_tampered",
            )
        await self._move_head(seq, orphan.entry)
        return orphan

    async def _write(self, seq: int, entry: dict[str, Any], until: datetime) -> None:
        await self.stores.call(
            self.region,
            "put_object",
            Bucket=self.bucket,
            Key=object_key(seq),
            Body=json.dumps(entry, sort_keys=True).encode(),
            ContentType="application/json",
            ServerSideEncryption="AES256",
            Metadata={"data-class": "audit"},
            ObjectLockMode=LOCK_MODE,
            ObjectLockRetainUntilDate=until,
        )

    async def read(self, seq: int, version_id: str | None = None) -> AuditEntry:
        extra = {"VersionId": version_id} if version_id else {}
        response = await self.stores.call(
            self.region, "get_object", Bucket=self.bucket, Key=object_key(seq), **extra
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
        head_sig = self.signer.sign(head_message(self.region, last, entry.hash))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self.head_key,
                mapping={
                    "seq": last,
                    "hash": entry.hash,
                    "sig": head_sig,
                    "key_id": self.signer.key_id,
                },
            )
            pipe.hset(self.ids_key, str(entry.entry.get("entry_id")), last)
            await pipe.execute()
        return last, entry.hash

    async def versions(self) -> tuple[dict[int, list[dict[str, Any]]], dict[int, int]]:
        """Every stored version of every entry (newest first, as S3 lists them), and the
        number of delete markers on each entry."""
        versions: dict[int, list[dict[str, Any]]] = {}
        markers: dict[int, int] = {}
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": PREFIX}
        for _ in range(_MAX_PAGES):
            page = await self.stores.call(self.region, "list_object_versions", **params)
            for item in page.get("Versions", []):
                versions.setdefault(_seq_of(str(item["Key"])), []).append(item)
            for item in page.get("DeleteMarkers", []):
                seq = _seq_of(str(item["Key"]))
                markers[seq] = markers.get(seq, 0) + 1
            if not page.get("IsTruncated"):
                break
            params["KeyMarker"] = page.get("NextKeyMarker")
            params["VersionIdMarker"] = page.get("NextVersionIdMarker")
        versions.pop(0, None)
        markers.pop(0, None)
        return versions, markers


def _seq_of(key: str) -> int:
    name = key.removeprefix(PREFIX).removesuffix(".json")
    return int(name) if name.isdigit() else 0


def check_entry(
    entry: dict[str, Any], seq: int, prev: str, verifier: AuditVerifier
) -> list[tuple[str, str]]:
    """(kind, detail) for each way `entry` is not the signed successor of `prev` at `seq`."""
    found: list[tuple[str, str]] = []
    if entry.get("seq") != seq or entry.get("prev") != prev:
        found.append(("chain", f"entry {seq} does not follow entry {seq - 1}"))
    if entry_hash(entry) != entry.get("hash"):
        found.append(("hash", f"entry {seq} does not match its hash"))
    if "sig" not in entry:
        found.append(("unsigned", f"entry {seq} is not signed"))
    elif not verifier.verify(str(entry.get("key_id")), signed_bytes(entry), str(entry["sig"])):
        found.append(("signature", f"entry {seq} does not match its signature"))
    return found


@dataclass(frozen=True)
class Failure:
    kind: str
    detail: str
    seq: int | None = None


@dataclass
class ChainReport:
    region: str
    head: int
    entries: list[dict[str, Any]]
    failures: list[Failure] = field(default_factory=list)

    def fail(self, kind: str, detail: str, seq: int | None = None) -> None:
        self.failures.append(Failure(kind, detail, seq))

    @property
    def problems(self) -> list[str]:
        return [f.detail for f in self.failures]

    @property
    def ok(self) -> bool:
        return not self.failures


async def verify_chain(log: AuditLog, verifier: AuditVerifier | None = None) -> ChainReport:
    """Every entry up to the signed head: each hashes to itself, is signed, names its
    predecessor, is the only version of its key and is under COMPLIANCE retention until
    its signed date; no delete marker hides one and none lies past the head."""
    verifier = verifier or AuditVerifier([log.signer.public_key()])
    versions, markers = await log.versions()
    signed = await log.signed_head()
    report = ChainReport(log.region, 0, [])
    head_hash: str | None = GENESIS
    if signed is None:
        # Redis lost the head (it is recovered by the next append): the bucket's entries,
        # which cannot be deleted, stand in for it.
        report.head, head_hash = (max(versions), None) if versions else (0, GENESIS)
    else:
        report.head, head_hash = signed.seq, signed.hash
        message = head_message(log.region, signed.seq, signed.hash)
        if not verifier.verify(signed.key_id, message, signed.sig):
            detail = f"the recorded chain head ({signed.seq}) is not signed by the audit key"
            report.fail("head_signature", detail)
    head_seq = report.head
    prev = GENESIS
    for seq in range(1, head_seq + 1):
        stored = versions.get(seq, [])
        if markers.get(seq):
            report.fail("deleted", f"entry {seq} is hidden by a delete marker", seq)
        if len(stored) > 1:
            report.fail("rewritten", f"entry {seq} has {len(stored)} versions", seq)
        if not stored:
            report.fail("missing", f"entry {seq} is missing", seq)
            return report
        # What readers get (the newest version), the hidden one when a marker is on top.
        try:
            newest = next((v for v in stored if v.get("IsLatest")), stored[0])
            entry = (await log.read(seq, str(newest["VersionId"]))).entry
        except (ValueError, KeyError) as exc:
            report.fail("not_json", f"entry {seq} is not valid JSON: {type(exc).__name__}", seq)
            return report
        except ClientError:
            report.fail("missing", f"entry {seq} is missing", seq)
            return report
        for kind, detail in check_entry(entry, seq, prev, verifier):
            report.fail(kind, detail, seq)
        await _check_locks(log, report, seq, entry, stored)
        prev = str(entry.get("hash"))
        report.entries.append(entry)
    if head_hash is not None and prev != head_hash:
        report.fail("head", "the last entry is not the recorded chain head")
    beyond = sorted(s for s in set(versions) | set(markers) if s > head_seq)
    if beyond:
        report.fail(
            "truncated",
            f"entries {beyond[0]}..{beyond[-1]} lie past the recorded head {head_seq}"
            " (the head was moved back, or an append crashed; the next append adopts it)",
        )
    return report


async def _check_locks(
    log: AuditLog, report: ChainReport, seq: int, entry: dict[str, Any], stored: list[Any]
) -> None:
    try:
        required: datetime | None = datetime.fromisoformat(str(entry["retain_until"]))
    except (KeyError, ValueError):
        required = None
    for version in stored:
        meta = await log.stores.call(
            log.region,
            "head_object",
            Bucket=log.bucket,
            Key=object_key(seq),
            VersionId=str(version["VersionId"]),
        )
        mode, until = meta.get("ObjectLockMode"), meta.get("ObjectLockRetainUntilDate")
        if mode != LOCK_MODE or until is None:
            detail = f"entry {seq} version {version['VersionId']} is not under {LOCK_MODE} lock"
            report.fail("lock", detail, seq)
        elif required is not None and until < required:
            detail = f"entry {seq} version {version['VersionId']} is locked only until {until}"
            report.fail("lock", detail, seq)
