"""Writing exam data the way the platform does (through `RegionalStore`); reading receipts."""

from __future__ import annotations

from typing import Any

from api.runtime import Runtime
from infra.regional import StoredObject
from tests.privacy.conftest import bucket_versions

# One object of each class the platform writes for a candidate (name, class, subject kind).
PLATFORM_WRITES: tuple[tuple[str, str], ...] = (
    ("recordings", "s0001-00001.webm"),
    ("face", "template.bin"),
    ("evidence", "verify-0001.jpg"),
)


async def platform_data(runtime: Runtime, exam_id: str, cid: str) -> list[StoredObject]:
    """Recordings (two versions), a face template, evidence and a client log of one candidate."""
    stored = []
    for data_class, name in PLATFORM_WRITES:
        stored.append(
            await runtime.regional.put(exam_id, data_class, cid, name, f"{cid}:{name}".encode())  # type: ignore[arg-type]
        )
    stored.append(
        await runtime.regional.put(exam_id, "recordings", cid, "s0001-00001.webm", b"second take")
    )
    stored.append(
        await runtime.regional.put(
            exam_id, "logs", "client", f"2026-01-01T00-{cid}.ndjson.gz", b"{}"
        )
    )
    return stored


async def delete_marker(runtime: Runtime, exam_id: str, key: str) -> None:
    """An ordinary (unversioned) delete, as a client of S3 might do: leaves a delete marker."""
    region = await runtime.regional.region_of(exam_id)
    await runtime.stores.call(
        region, "delete_object", Bucket=runtime.stores.bucket(region), Key=key
    )


async def versions(runtime: Runtime, region: str, prefix: str) -> set[tuple[str, str]]:
    return {
        (str(v["Key"]), str(v["VersionId"]))
        for v in await bucket_versions(runtime.stores, region, prefix)
    }


def receipted(entries: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Every (key, version id) the deletion receipts name, duplicates kept."""
    return [
        (str(o["key"]), str(o["version_id"]))
        for e in entries
        if e["kind"] == "deletion"
        for o in e["body"]["objects"]
    ]
