"""RegionalStore: the only way personal data reaches object storage.

Every write names an exam; the store looks up that exam's region and writes
to that region's bucket, nowhere else. A caller that names a target region
(a replica, an export) other than the exam's gets `ResidencyViolation`, and
the attempt is audited. Keys carry no personal data in clear:

    {exam_id}/{data_class}/{subject}/{name}

where `subject` is an opaque candidate id (an HMAC) or `_` for exam-wide data.
Server-side encryption is asked for on every write; classes holding biometric
or identity data are also sealed with the exam's data key (AES-GCM envelope).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any, Literal

from botocore.exceptions import ClientError
from redis.asyncio import Redis

from infra.crypto import DataKeys
from infra.errors import InvalidInput, NotFound, ResidencyViolation
from infra.objectstore import ObjectStores

DataClass = Literal[
    "recordings", "photos", "whiteboards", "face", "evidence", "logs", "timelines", "exports"
]
SEALED_CLASSES: frozenset[str] = frozenset({"face", "photos", "whiteboards", "evidence", "exports"})
# Region-level prefixes that are no exam's data: the audit chain and update installers.
RESERVED_PREFIXES: tuple[str, ...] = ("_audit/", "_releases/")
_MAX_PAGES = 10_000
Versions = list[dict[str, Any]]
Names = list[str]
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class StoredObject:
    region: str
    bucket: str
    key: str
    version_id: str | None
    etag: str
    size: int


class RegionalStore:
    def __init__(self, stores: ObjectStores, keys: DataKeys, redis: Redis) -> None:
        self.stores = stores
        self.keys = keys
        self.redis = redis
        self._regions: dict[str, str] = {}

    async def region_of(self, exam_id: str) -> str:
        region = self._regions.get(exam_id)
        if region is None:
            raw = await self.redis.get(self.keys.names.exam_record(exam_id))
            if raw is None:
                raise NotFound("no such exam", reason="exam_not_found")
            region = str(json.loads(raw)["region"])
            self._regions[exam_id] = region
        return region

    @staticmethod
    def object_key(exam_id: str, data_class: DataClass, subject: str, name: str) -> str:
        for part in (exam_id, subject, name):
            if part != "_" and not _PART.fullmatch(part):
                raise InvalidInput(f"bad object key part {part!r}", reason="bad_object_key")
        return f"{exam_id}/{data_class}/{subject}/{name}"

    async def put(
        self,
        exam_id: str,
        data_class: DataClass,
        subject: str,
        name: str,
        body: bytes,
        *,
        content_type: str = "application/octet-stream",
        target_region: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> StoredObject:
        region = await self.region_of(exam_id)
        if target_region is not None and target_region != region:
            await self._audit(
                region,
                {"event": "residency_violation", "exam": exam_id, "target": target_region},
            )
            raise ResidencyViolation(
                f"exam {exam_id} keeps its data in {region}, not {target_region}",
                exam=exam_id,
                region=region,
            )
        key = self.object_key(exam_id, data_class, subject, name)
        sealed = data_class in SEALED_CLASSES
        payload = await self.keys.seal(exam_id, f"object:{key}", body) if sealed else body
        # Data written while a legal hold covers its exam or subject is locked on arrival.
        held = {"ObjectLockLegalHoldStatus": "ON"} if await self.held(exam_id, subject) else {}
        response = await self.stores.call(
            region,
            "put_object",
            Bucket=self.stores.bucket(region),
            Key=key,
            Body=payload,
            ContentType=content_type,
            ServerSideEncryption="AES256",
            Metadata={
                "data-class": data_class,
                "sealed": "1" if sealed else "0",
                **(metadata or {}),
            },
            **held,
        )
        return StoredObject(
            region=region,
            bucket=self.stores.bucket(region),
            key=key,
            version_id=response.get("VersionId"),
            etag=str(response.get("ETag", "")).strip('"'),
            size=len(payload),
        )

    async def get(self, exam_id: str, key: str) -> bytes:
        region = await self.region_of(exam_id)
        if not key.startswith(f"{exam_id}/"):
            raise NotFound("no such object", reason="object_not_found")
        try:
            response = await self.stores.call(
                region, "get_object", Bucket=self.stores.bucket(region), Key=key
            )
        except self.stores.client(region).exceptions.NoSuchKey:
            raise NotFound("no such object", reason="object_not_found") from None
        body: bytes = await self.stores.run(response["Body"].read)
        if response.get("Metadata", {}).get("sealed") == "1":
            return await self.keys.open(exam_id, f"object:{key}", body)
        return body

    async def list(self, exam_id: str, prefix: str = "") -> list[dict[str, Any]]:
        """Every version and delete marker under the exam (or a prefix within it)."""
        region = await self.region_of(exam_id)
        return await self.list_region(region, f"{exam_id}/{prefix}")

    async def list_region(self, region: str, prefix: str, limit: int = 10_000_000) -> Versions:
        """Every version and delete marker under a prefix of one region's bucket."""
        found: Versions = []
        params: dict[str, Any] = {"Bucket": self.stores.bucket(region), "Prefix": prefix}
        for _page in range(_MAX_PAGES):
            page = await self.stores.call(region, "list_object_versions", **params)
            found += [{**v, "DeleteMarker": False} for v in page.get("Versions", [])]
            found += [{**m, "DeleteMarker": True} for m in page.get("DeleteMarkers", [])]
            if not page.get("IsTruncated") or len(found) >= limit:
                break
            params["KeyMarker"] = page.get("NextKeyMarker")
            params["VersionIdMarker"] = page.get("NextVersionIdMarker")
        return found[:limit]

    async def exams_in(self, region: str) -> Names:
        """The exams that have objects in a region's bucket (top-level prefixes)."""
        names: Names = []
        params: dict[str, Any] = {"Bucket": self.stores.bucket(region), "Delimiter": "/"}
        for _page in range(_MAX_PAGES):
            page = await self.stores.call(region, "list_objects_v2", **params)
            names += [str(p["Prefix"]).rstrip("/") for p in page.get("CommonPrefixes", [])]
            if not page.get("IsTruncated"):
                break
            params["ContinuationToken"] = page["NextContinuationToken"]
        return sorted(n for n in names if not n.startswith("_"))

    async def delete_version(self, region: str, key: str, version_id: str) -> bool:
        """Delete one version or delete marker for good; False if a legal hold keeps it."""
        self._deletable(key)
        try:
            await self.stores.call(
                region,
                "delete_object",
                Bucket=self.stores.bucket(region),
                Key=key,
                VersionId=version_id,
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "AccessDenied":
                return False
            raise
        return True

    async def set_legal_hold(self, region: str, key: str, version_id: str, on: bool) -> None:
        """Switch the S3 Object Lock legal hold of one object version."""
        await self.stores.call(
            region,
            "put_object_legal_hold",
            Bucket=self.stores.bucket(region),
            Key=key,
            VersionId=version_id,
            LegalHold={"Status": "ON" if on else "OFF"},
        )

    async def held(self, exam_id: str, subject: str) -> bool:
        """Whether a legal hold covers the whole exam or this subject of it."""
        flags = await self.redis.smismember(self.keys.names.held_subjects(exam_id), ["*", subject])
        return any(flags)

    @staticmethod
    def _deletable(key: str) -> None:
        if key.startswith(RESERVED_PREFIXES):
            raise ResidencyViolation("the audit chain is never deleted", reason="audit_protected")

    async def audit(self, region: str, event: dict[str, Any]) -> None:
        await self._audit(region, event)

    async def _audit(self, region: str, event: dict[str, Any]) -> None:
        await self.redis.xadd(
            self.keys.names.audit_events(region), {"e": json.dumps({**event, "at": time.time()})}
        )
