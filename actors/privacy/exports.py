"""Disclosure packages for an authority: a zip of an exam's (or one candidate's) data.

The archive holds every current object of the exam (decrypted: the archive
itself is sealed with the exam's data key when stored, class `exports`), the
room timelines and the consent records, and a `manifest.json` listing each
file with its source key, version id, data class, size and SHA-256. Earlier
exports are not included. Limits: `max_export_objects`, `max_export_bytes`.

What people wrote into a room (help requests, messages, incident and face-review
notes) is journaled sealed (`core.room_text`): it is opened here, as the objects
are, and so in a candidate's copy of their data (`records`).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
import zipfile
from typing import Any

from redis.asyncio import Redis

from core import keys, room_text
from infra.crypto import DataKeys
from infra.errors import PayloadTooLarge
from infra.redis import text
from infra.regional import RegionalStore
from infra.settings.privacy import PrivacySettings

EXAM_WIDE = "*"


async def stream_records(
    redis: Redis, key: str, field: bytes, limit: int, page: int = 1000
) -> list[dict[str, Any]]:
    """The JSON records of a Redis stream, oldest first, at most `limit`."""
    found: list[dict[str, Any]] = []
    cursor = "-"
    while len(found) < limit:
        entries: Any = await redis.xrange(
            key, min=cursor, max="+", count=min(page, limit - len(found))
        )
        for raw_id, fields in entries:
            cursor = f"({text(raw_id)}"
            found.append({"id": text(raw_id), **json.loads(fields[field])})
        if len(entries) < page:
            break
    return found


class ExportBuilder:
    def __init__(
        self,
        redis: Redis,
        regional: RegionalStore,
        settings: PrivacySettings,
        data_keys: DataKeys,
    ) -> None:
        self.redis = redis
        self.regional = regional
        self.settings = settings
        self.data_keys = data_keys

    async def build(
        self, exam_id: str, subject: str, rooms: dict[str, list[str]], header: dict[str, Any]
    ) -> tuple[bytes, dict[str, Any]]:
        files: dict[str, bytes] = {}
        entries: list[dict[str, Any]] = []
        total = 0
        for version in await self._objects(exam_id, subject):
            key = str(version["Key"])
            body = await self.regional.get(exam_id, key)
            total += len(body)
            if total > self.settings.max_export_bytes:
                raise PayloadTooLarge(
                    "the export is over its size limit", reason="export_too_large"
                )
            files[f"objects/{key}"] = body
            entries.append(
                {
                    "file": f"objects/{key}",
                    "key": key,
                    "version_id": str(version["VersionId"]),
                    "data_class": key.split("/")[1],
                }
            )
        for name, records in (await self.records(exam_id, subject, rooms)).items():
            files[name] = "".join(json.dumps(r) + "\n" for r in records).encode()
            entries.append({"file": name, "records": len(records)})
        for entry in entries:
            body = files[entry["file"]]
            entry.update(size=len(body), sha256=hashlib.sha256(body).hexdigest())
        manifest = {
            **header,
            "exam": exam_id,
            "subject": subject,
            "created": time.time(),
            "files": entries,
        }
        archive = await asyncio.to_thread(_zip, files, manifest)
        return archive, manifest

    async def _objects(self, exam_id: str, subject: str) -> list[dict[str, Any]]:
        listed = await self.regional.list(exam_id)
        current = [
            v
            for v in listed
            if v.get("IsLatest")
            and not v["DeleteMarker"]
            and str(v["Key"]).split("/")[1] != "exports"
            and (subject == EXAM_WIDE or str(v["Key"]).split("/")[2] == subject)
        ]
        if len(current) > self.settings.max_export_objects:
            raise PayloadTooLarge("the export has too many objects", reason="export_too_large")
        return sorted(current, key=lambda v: str(v["Key"]))

    async def records(
        self, exam_id: str, subject: str, rooms: dict[str, list[str]]
    ) -> dict[str, list[dict[str, Any]]]:
        limit = self.settings.max_stream_entries
        records: dict[str, list[dict[str, Any]]] = {}
        for room, cids in sorted(rooms.items()):
            if subject != EXAM_WIDE and subject not in cids:
                continue
            events = await stream_records(
                self.redis, keys.room_events_key(f"{exam_id}/{room}"), b"e", limit
            )
            if subject != EXAM_WIDE:
                events = [e for e in events if e.get("cid") == subject]
            records[f"timelines/{room}.jsonl"] = [
                await room_text.opened(self.data_keys, exam_id, e) for e in events
            ]
        consents = await stream_records(self.redis, keys.consents_key(exam_id), b"r", limit)
        records["consents.jsonl"] = [c for c in consents if subject in (EXAM_WIDE, c.get("cid"))]
        return records


def _zip(files: dict[str, bytes], manifest: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, body in files.items():
            archive.writestr(name, body)
        archive.writestr("manifest.json", json.dumps(manifest, indent=2, sort_keys=True))
    return out.getvalue()
