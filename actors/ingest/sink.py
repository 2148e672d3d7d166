"""Where flushed log objects go: the exam's region, or a configured region for anonymous logs.

Exam-bound objects go through `RegionalStore.put` (the exam decides the
bucket). Anonymous ones (sent before login) have no exam, so this module
adds the one region-level path, and it too names its region explicitly:

    {exam_id}/logs/{kind}/{YYYY-MM-DD}T{HH}-{plan}.ndjson.gz      exam's region
    _anonymous/logs/{kind}/{YYYY-MM-DD}T{HH}-{plan}.ndjson.gz     the given region

Both are gzip NDJSON, server-side encrypted, partitioned by kind and UTC hour
of arrival; the bucket is the region.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.keys import ANONYMOUS
from infra.objectstore import ObjectStores
from infra.regional import RegionalStore

CONTENT_TYPE = "application/gzip"


@dataclass(frozen=True)
class LogObject:
    exam: str | None
    region: str
    kind: str
    partition: str  # YYYY-MM-DDTHH, UTC hour of arrival
    plan: str

    @property
    def name(self) -> str:
        return f"{self.partition}-{self.plan}.ndjson.gz"


def anonymous_key(kind: str, name: str) -> str:
    return f"{ANONYMOUS}/logs/{kind}/{name}"


class LogSink:
    def __init__(self, regional: RegionalStore, stores: ObjectStores) -> None:
        self.regional = regional
        self.stores = stores

    async def write(self, target: LogObject, body: bytes) -> str:
        """Store one object; the same target always gets the same key (a redo overwrites)."""
        metadata = {"partition": target.partition, "plan": target.plan}
        if target.exam is not None:
            stored = await self.regional.put(
                target.exam,
                "logs",
                target.kind,
                target.name,
                body,
                content_type=CONTENT_TYPE,
                metadata=metadata,
            )
            return stored.key
        return await self.put_region_log(target.region, target.kind, target.name, body, metadata)

    async def put_region_log(
        self, region: str, kind: str, name: str, body: bytes, metadata: dict[str, str]
    ) -> str:
        """Write a region-level log object (no exam): the caller names the region."""
        RegionalStore.object_key("anonymous", "logs", kind, name)  # refuses bad key parts
        key = anonymous_key(kind, name)
        await self.stores.call(
            region,
            "put_object",
            Bucket=self.stores.bucket(region),
            Key=key,
            Body=body,
            ContentType=CONTENT_TYPE,
            ServerSideEncryption="AES256",
            Metadata={"data-class": "logs", "sealed": "0", **metadata},
        )
        return key
