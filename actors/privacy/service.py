"""The gateway's side of privacy: uploads, legal holds, exports, consents, data-subject rights.

Everything personal goes through `RegionalStore` (the exam decides the region);
retention runs happen in the region's `Retention` actor; every hold, export,
download and deletion request is an entry of the region's audit chain.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

from redis.asyncio import Redis

from actors.privacy import retention
from actors.privacy.exports import EXAM_WIDE, ExportBuilder, stream_records
from actors.privacy.holds import Hold, Holds
from actors.privacy.run import biometric_mode, erasure_mode
from core import keys
from core.exam import Exam
from core.exams import ExamRegistry
from infra.audit import AuditLog
from infra.errors import Conflict, NotFound, RateLimited
from infra.redis import spend
from infra.regional import RegionalStore
from infra.settings import Settings
from infra.telemetry import actor_call
from ml.images import clean_image

UPLOAD_CLASSES = ("photos", "whiteboards")
EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp"}


class PrivacyService:
    def __init__(
        self, settings: Settings, redis: Redis, regional: RegionalStore, exams: ExamRegistry
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.regional = regional
        self.exams = exams
        self.holds = Holds(redis, regional, settings.privacy.max_held_objects)
        self.exports = ExportBuilder(redis, regional, settings.privacy, exams.keys)
        self._actors: dict[str, Any] = {}

    async def start(self) -> None:
        self._actors = await retention.ensure_all(self.settings)

    def audit(self, region: str) -> AuditLog:
        return AuditLog(self.regional.stores, self.redis, region, keys.STATE_NAMES)

    async def run_retention(self, exam_id: str, mode: str = "sweep") -> dict[str, Any]:
        region = await self.regional.region_of(exam_id)
        handle: Any = self._actors.get(region)
        if handle is None:
            handle = await asyncio.to_thread(retention.get_or_create, self.settings, region)
            self._actors[region] = handle
        summary: dict[str, Any] = await actor_call(handle.run, [exam_id], mode)
        return summary

    async def receipts(self, exam_id: str, limit: int = 200) -> list[dict[str, Any]]:
        region = await self.regional.region_of(exam_id)
        return [e.entry for e in await self.audit(region).exam_entries(exam_id, limit)]

    # -- uploads: photos (an answer sheet) and whiteboard snapshots ----------------------

    async def spend_upload_attempt(self, exam_id: str, cid: str) -> None:
        """Count one upload attempt, whatever its outcome; 429 once the window's are spent."""
        p = self.settings.privacy
        await spend(
            self.redis,
            keys.upload_attempts_key(exam_id, cid),
            p.upload_window_seconds,
            p.upload_attempts_per_window,
            refusal="too many uploads; wait before sending another",
            reason="upload_limit",
        )

    async def store_upload(
        self, exam_id: str, room: str, cid: str, data_class: str, body: bytes
    ) -> dict[str, Any]:
        """Validate the image (type, size, pixel bombs), strip its metadata, store it sealed."""
        shared = await self.redis.hlen(keys.privacy_uploads_key(exam_id, cid))
        if shared >= self.settings.privacy.max_uploads_per_candidate:
            raise RateLimited("you have shared the most uploads allowed", reason="upload_limit")
        # What is stored is the pixels alone: EXIF (GPS), XMP and comments do not survive.
        body, kind = await asyncio.to_thread(clean_image, body, self.settings.face)
        upload_id = f"u{secrets.token_hex(8)}"
        stored = await self.regional.put(
            exam_id,
            data_class,  # type: ignore[arg-type]
            cid,
            f"{upload_id}.{EXTENSIONS[kind]}",
            body,
            content_type=f"image/{kind}",
        )
        entry = {
            "id": upload_id,
            "candidate": cid,
            "room": room,
            "data_class": data_class,
            "key": stored.key,
            "version_id": stored.version_id,
            "media_type": f"image/{kind}",
            "bytes": len(body),
            "at": time.time(),
        }
        await self.redis.hset(keys.privacy_uploads_key(exam_id, cid), upload_id, json.dumps(entry))
        return entry

    async def candidate_uploads(self, exam_id: str, cid: str) -> list[dict[str, Any]]:
        raw = await self.redis.hvals(keys.privacy_uploads_key(exam_id, cid))
        return sorted((json.loads(r) for r in raw), key=lambda e: float(e["at"]))

    async def room_uploads(self, exam_id: str, room: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for cid in await self.exams.room_candidates(exam_id, room):
            found += [e for e in await self.candidate_uploads(exam_id, cid) if e["room"] == room]
        return sorted(found, key=lambda e: float(e["at"]))

    async def upload_bytes(self, exam_id: str, room: str, upload_id: str) -> tuple[bytes, str]:
        for entry in await self.room_uploads(exam_id, room):
            if entry["id"] == upload_id:
                return await self.regional.get(exam_id, entry["key"]), str(entry["media_type"])
        raise NotFound("no such upload", reason="upload_not_found")

    # -- legal holds and exports ------------------------------------------------------------

    async def rooms(self, exam_id: str) -> dict[str, list[str]]:
        return {
            room: await self.exams.room_candidates(exam_id, room)
            for room in await self.exams.rooms(exam_id)
        }

    async def export(
        self, exam_id: str, subject: str, reference: str, reason: str, by: str
    ) -> dict[str, Any]:
        header = {"reference": reference, "reason": reason, "requested_by": by}
        archive, manifest = await self.exports.build(
            exam_id, subject, await self.rooms(exam_id), header
        )
        export_id = f"x{secrets.token_hex(8)}"
        stored = await self.regional.put(
            exam_id, "exports", "_", f"{export_id}.zip", archive, content_type="application/zip"
        )
        record = {
            "id": export_id,
            "key": stored.key,
            "version_id": stored.version_id,
            "subject": subject,
            "reference": reference,
            "reason": reason,
            "requested_by": by,
            "files": len(manifest["files"]),
            "bytes": len(archive),
            "at": time.time(),
        }
        await self.redis.hset(keys.privacy_exports_key(exam_id), export_id, json.dumps(record))
        audit = {**record, "manifest": manifest["files"]}
        await self.audit(stored.region).append("export", audit, exam=exam_id)
        return {**record, "manifest": manifest}

    async def export_archive(self, exam_id: str, export_id: str, by: str) -> bytes:
        raw = await self.redis.hget(keys.privacy_exports_key(exam_id), export_id)
        if raw is None:
            raise NotFound("no such export", reason="export_not_found")
        record = json.loads(raw)
        body = await self.regional.get(exam_id, record["key"])
        region = await self.regional.region_of(exam_id)
        download = {"export": export_id, "downloaded_by": by}
        await self.audit(region).append("export_downloaded", download, exam=exam_id)
        return body

    # -- consents and data-subject rights ---------------------------------------------------

    async def consents(self, exam_id: str, cid: str | None = None) -> list[dict[str, Any]]:
        key = keys.consents_key(exam_id)
        found = await stream_records(
            self.redis, key, b"r", self.settings.privacy.max_stream_entries
        )
        return [r for r in found if cid is None or r.get("cid") == cid]

    async def third_party(self, exam_id: str, cid: str) -> bool:
        return _sharing(await self.consents(exam_id, cid))

    async def spend_subject_request(self, exam_id: str, cid: str) -> None:
        """Count a data-copy or deletion request; 429 once the window's are spent."""
        p = self.settings.privacy
        await spend(
            self.redis,
            keys.subject_requests_key(exam_id, cid),
            p.subject_request_window_seconds,
            p.subject_requests_per_window,
            refusal="too many data requests; wait before asking again",
            reason="subject_request_limit",
        )

    async def subject_copy(self, exam: Exam, cid: str, room: str) -> dict[str, Any]:
        # The caller's own room only, not every room of the exam: what one call reads is
        # bounded by the caller's data (and that room's journal, capped by
        # `max_stream_entries`), not by the size of the exam.
        timeline = await self.exports.records(exam.id, cid, {room: [cid]})
        consents = timeline.pop("consents.jsonl", [])
        return {
            "candidate": cid,
            "exam": {"id": exam.id, "title": exam.title, "region": exam.region},
            "room": room,
            "consents": consents,
            "timeline": [e for events in timeline.values() for e in events],
            "uploads": await self.candidate_uploads(exam.id, cid),
            "third_party_sharing": _sharing(consents),
            "holds": len(await self._holds_covering(exam.id, cid)),
        }

    async def _holds_covering(self, exam_id: str, cid: str) -> list[Hold]:
        # The held-subjects set first: the exam's holds are read only when one applies.
        flags = await self.redis.smismember(
            keys.privacy_held_subjects_key(exam_id), [cid, EXAM_WIDE]
        )
        return await self.holds.covering(exam_id, cid) if any(flags) else []

    async def request_deletion(self, exam: Exam, cid: str) -> dict[str, Any]:
        holds = await self._holds_covering(exam.id, cid)
        if holds:
            raise Conflict(
                "your data is under a legal hold and cannot be deleted now",
                reason="legal_hold",
                holds=[{"reference": h.reference, "reason": h.reason} for h in holds],
            )
        request = {"id": f"d{secrets.token_hex(6)}", "at": time.time(), "status": "accepted"}
        await self.redis.hset(keys.privacy_erasures_key(exam.id), cid, json.dumps(request))
        await self.audit(exam.region).append(
            "deletion_request", {"candidate": cid, **request}, exam=exam.id
        )
        if time.time() < exam.ends_at.timestamp():
            return {**request, "status": "scheduled", "after": exam.ends_at.isoformat()}
        # This request's groups alone: never an exam-wide sweep on a candidate's call.
        summary = await self.run_retention(exam.id, erasure_mode(cid))
        return {**request, "status": "done", "receipts": summary["receipts"]}

    async def delete_face(self, exam_id: str, cid: str) -> dict[str, Any]:
        """Delete a candidate's face data now (a withdrawn biometric consent), receipted."""
        return await self.run_retention(exam_id, biometric_mode(cid))


def _sharing(consents: list[dict[str, Any]]) -> bool:
    """Whether the latest third-party consent among `consents` grants sharing."""
    latest = [r for r in consents if r.get("kind") == "third_party"]
    return bool(latest) and str(latest[-1]["value"]).startswith("granted")


__all__ = ["EXAM_WIDE", "UPLOAD_CLASSES", "PrivacyService"]
