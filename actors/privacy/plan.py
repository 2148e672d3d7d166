"""From due groups to the exact things a run deletes: object versions and Redis keys.

A group's objects are every version and delete marker under its prefix
(`{exam}/{class}/` or `{exam}/{class}/{subject}/`) except those of subjects
under a legal hold; an exam-wide hold keeps the whole exam. Alongside the
objects go the Redis records that describe them (recording index, face
records, the uploads index) and, for timelines, the room's journal streams
(evidence and heartbeats), snapshot and owner keys.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from redis.asyncio import Redis

from actors.privacy.policy import ALL_SUBJECTS, Due
from core import keys
from infra.redis import text
from infra.regional import RegionalStore

EXAM_WIDE = "*"
# Classes that are one Redis record of the whole exam.
EXAM_RECORDS = {"consents": keys.consents_key, "requests": keys.rights_requests_key}
_SCAN_ROUNDS = 100_000


def timeline_keys(exam_id: str, room: str) -> list[str]:
    journal = keys.room_key(exam_id, room)
    return [
        keys.room_events_key(journal),
        keys.room_presence_key(journal),
        keys.room_snapshot_key(journal),
        keys.room_owner_key(journal),
        keys.room_owner_epoch_key(journal),
    ]


@dataclass(frozen=True)
class Item:
    """One thing a run deletes: an object version (`s3`) or a Redis key (`redis`)."""

    group: str
    kind: str
    key: str
    version_id: str = ""
    size: int = 0
    etag: str = ""
    delete_marker: bool = False

    @property
    def id(self) -> str:
        return hashlib.sha256(f"{self.kind}\0{self.key}\0{self.version_id}".encode()).hexdigest()[
            :24
        ]

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Item:
        values: dict[str, Any] = json.loads(raw)
        return cls(**values)


async def held_subjects(redis: Redis, exam_id: str) -> set[str]:
    return {text(m) for m in await redis.smembers(keys.privacy_held_subjects_key(exam_id))}


def group_held(due: Due, held: set[str], rooms: dict[str, list[str]]) -> bool:
    if EXAM_WIDE in held or due.subject in held:
        return True
    if due.storage_class == "timelines":
        return any(cid in held for cid in rooms.get(due.subject, []))
    return False


def held_item(item: Item, due: Due, held: set[str]) -> bool:
    """Whether a hold now covers a planned item (holds can arrive after the plan)."""
    if EXAM_WIDE in held or due.subject in held:
        return True
    parts = item.key.split("/")
    return item.kind == "s3" and len(parts) > 3 and parts[2] in held


class Planner:
    def __init__(self, redis: Redis, regional: RegionalStore, region: str) -> None:
        self.redis = redis
        self.regional = regional
        self.region = region

    async def items(
        self, due: Due, held: set[str], rooms: dict[str, list[str]], limit: int
    ) -> list[Item]:
        if group_held(due, held, rooms) or limit <= 0:
            return []
        if due.storage_class == "timelines":
            return await self._existing(due, timeline_keys(due.exam, due.subject))
        if due.storage_class == "records":
            # An exam's Redis records go only when nothing of it is held: holds need them.
            names = await self._exam_keys(due.exam)
            if due.policy_class == "exam_record":
                names.append(keys.exam_key(due.exam))  # its retention's end: the record too
            return [] if held else await self._existing(due, names)
        if due.storage_class in EXAM_RECORDS:
            # One record of the whole exam: kept entire while anything of it is held.
            return (
                []
                if held
                else await self._existing(due, [EXAM_RECORDS[due.storage_class](due.exam)])
            )
        if due.storage_class == "identity":
            subjects = (
                [c for cids in rooms.values() for c in cids]
                if due.subject == ALL_SUBJECTS
                else [due.subject]
            )
            # The record, and the devices that sent logs with their token (device ids).
            names = [
                name
                for c in subjects
                if c not in held
                for name in (
                    keys.candidate_key(due.exam, c),
                    keys.candidate_devices_key(due.exam, c),
                )
            ]
            return await self._existing(due, names)
        prefix = f"{due.exam}/{due.storage_class}/"
        if due.subject != ALL_SUBJECTS:
            prefix += f"{due.subject}/"
        found = await self.regional.list_region(self.region, prefix, limit=limit)
        items = [
            Item(
                group=due.group_id,
                kind="s3",
                key=str(v["Key"]),
                version_id=str(v["VersionId"]),
                size=int(v.get("Size", 0)),
                etag=str(v.get("ETag", "")).strip('"'),
                delete_marker=bool(v["DeleteMarker"]),
            )
            for v in found
            if str(v["Key"]).split("/")[2] not in held
        ]
        subjects = (
            [c for cids in rooms.values() for c in cids]
            if due.subject == ALL_SUBJECTS
            else [due.subject]
        )
        records = [k for c in subjects if c not in held for k in self._records(due, c)]
        return items + await self._existing(due, records)

    async def _exam_keys(self, exam_id: str) -> list[str]:
        names = [keys.privacy_exports_key(exam_id), keys.privacy_erasures_key(exam_id)]
        cursor: int = 0
        for _ in range(_SCAN_ROUNDS):
            cursor, found = await self.redis.scan(
                cursor, match=keys.exam_keys_pattern(exam_id), count=1000
            )
            names += [text(k) for k in found]
            if cursor == 0:
                break
        return sorted(set(names))

    @staticmethod
    def _records(due: Due, cid: str) -> list[str]:
        if due.storage_class == "recordings":
            return list(keys.recording_keys(due.exam, cid))
        if due.storage_class == "face":
            return [keys.face_record_key(due.exam, cid), keys.face_evidence_key(due.exam, cid)]
        if due.storage_class == "photos":
            return [keys.privacy_uploads_key(due.exam, cid)]
        return []

    async def _existing(self, due: Due, names: list[str]) -> list[Item]:
        if not names:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in names:
                pipe.exists(key)
            present = await pipe.execute()
        return [
            Item(group=due.group_id, kind="redis", key=k)
            for k, n in zip(names, present, strict=True)
            if n
        ]
