"""Whether a region's deletions really happened: its audit chain checked against its bucket.

A deletion receipt in the chain names object versions; the chain may hash perfectly
and still lie if one of them is stored yet. `examday audit verify` and the retention
benchmark both ask this of a region, so it lives with the privacy subsystem.
"""

from __future__ import annotations

from core import keys
from infra.audit import AuditLog, ChainReport, verify_chain
from infra.regional import RegionalStore

# Classes whose receipts name Redis records that nothing writes again once they are due
# (identity, consent records, requests, the exam record): one still there is a lie. Face
# records and indexes can be written again (a new enrolment), so they are not checked.
REDIS_CLASSES = ("identity", "consents", "requests", "records")


async def verify_region(regional: RegionalStore, region: str) -> ChainReport:
    report = await verify_chain(AuditLog(regional.stores, regional.redis, region, keys.STATE_NAMES))
    receipted: dict[str, set[tuple[str, str]]] = {}
    for entry in report.entries:
        if entry.get("kind") != "deletion":
            continue
        body = entry.get("body", {})
        if body.get("data_class") in REDIS_CLASSES:
            for name in body.get("redis_keys", []):
                if await regional.redis.exists(name):
                    report.fail("not_deleted", f"receipted Redis record {name} still exists")
        for obj in body.get("objects", []):
            exam = str(obj["key"]).split("/", 1)[0]
            receipted.setdefault(exam, set()).add((str(obj["key"]), str(obj["version_id"])))
    for exam, gone in sorted(receipted.items()):
        listed = await regional.list_region(region, f"{exam}/")
        present = {(str(v["Key"]), str(v["VersionId"])) for v in listed}
        for key, version in sorted(gone & present):
            report.fail("not_deleted", f"receipted object {key} version {version} is still stored")
    return report
