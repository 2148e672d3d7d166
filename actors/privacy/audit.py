"""Whether a region's deletions really happened: its audit chain checked against its bucket.

A deletion receipt in the chain names object versions; the chain may hash perfectly
and still lie if one of them is stored yet. `examday audit verify` and the retention
benchmark both ask this of a region, so it lives with the privacy subsystem.
"""

from __future__ import annotations

from core import keys
from infra.audit import AuditLog, ChainReport, verify_chain
from infra.regional import RegionalStore


async def verify_region(regional: RegionalStore, region: str) -> ChainReport:
    report = await verify_chain(AuditLog(regional.stores, regional.redis, region, keys.STATE_NAMES))
    receipted: dict[str, set[tuple[str, str]]] = {}
    for entry in report.entries:
        if entry.get("kind") != "deletion":
            continue
        for obj in entry.get("body", {}).get("objects", []):
            exam = str(obj["key"]).split("/", 1)[0]
            receipted.setdefault(exam, set()).add((str(obj["key"]), str(obj["version_id"])))
    for exam, gone in sorted(receipted.items()):
        listed = await regional.list_region(region, f"{exam}/")
        present = {(str(v["Key"]), str(v["VersionId"])) for v in listed}
        for key, version in sorted(gone & present):
            report.fail("not_deleted", f"receipted object {key} version {version} is still stored")
    return report
