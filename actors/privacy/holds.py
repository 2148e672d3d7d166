"""Legal holds: what an organiser keeps from deletion, with a reference and a reason.

A hold covers a whole exam or one candidate of it. While it stands:

  * its subjects are in the Redis set `keys.privacy_held_subjects_key(exam)`, which the
    retention sweeper reads before planning and `RegionalStore.put` reads to
    lock new objects on arrival;
  * every existing object version of its subjects carries an S3 Object Lock
    legal hold, so the store itself refuses to delete them.

Releasing a hold lifts the Object Lock only from versions no other hold covers. Only its
placer (kept in the record as `placed_by`) or an admin releases it. Placing and
releasing are audit entries in the exam's region.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any

from redis.asyncio import Redis

from core import keys
from infra.audit import AuditLog
from infra.errors import Forbidden, NotFound
from infra.regional import RegionalStore

EXAM_WIDE = "*"
_PIN_CONCURRENCY = 8


@dataclass(frozen=True)
class Hold:
    id: str
    exam: str
    subject: str  # a candidate id, or `*` for the whole exam
    reference: str
    reason: str
    placed_by: str
    placed_at: float
    pinned: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self))


class Holds:
    def __init__(self, redis: Redis, regional: RegionalStore, max_objects: int) -> None:
        self.redis = redis
        self.regional = regional
        self.max_objects = max_objects

    async def all(self, exam_id: str) -> list[Hold]:
        raw = await self.redis.hvals(keys.privacy_holds_key(exam_id))
        return sorted((Hold(**json.loads(r)) for r in raw), key=lambda h: h.placed_at)

    async def covering(self, exam_id: str, cid: str) -> list[Hold]:
        return [h for h in await self.all(exam_id) if h.subject in (EXAM_WIDE, cid)]

    async def place(self, exam_id: str, subject: str, reference: str, reason: str, by: str) -> Hold:
        hold = Hold(
            f"h{secrets.token_hex(6)}", exam_id, subject, reference, reason, by, time.time()
        )
        # The set first: from here on the sweeper keeps these subjects and new objects are locked.
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.privacy_holds_key(exam_id), hold.id, hold.to_json())
            pipe.sadd(keys.privacy_held_subjects_key(exam_id), subject)
            await pipe.execute()
        pinned = await self._pin(exam_id, subject, on=True)
        hold = Hold(**{**asdict(hold), "pinned": pinned})
        await self.redis.hset(keys.privacy_holds_key(exam_id), hold.id, hold.to_json())
        await self._audit(exam_id, "legal_hold_placed", hold)
        return hold

    async def release(self, exam_id: str, hold_id: str, by: str, *, any_placer: bool) -> Hold:
        """Release a hold placed by `by`, or, with `any_placer` (an admin), anyone's.

        403 `not_hold_placer` otherwise, before anything changes.
        """
        raw = await self.redis.hget(keys.privacy_holds_key(exam_id), hold_id)
        if raw is None:
            raise NotFound("no such hold", reason="hold_not_found")
        hold = Hold(**json.loads(raw))
        if not any_placer and hold.placed_by != by:
            raise Forbidden(
                f"only {hold.placed_by}, who placed this hold, or an admin may release it",
                reason="not_hold_placer",
            )
        await self.redis.hdel(keys.privacy_holds_key(exam_id), hold_id)
        remaining = {h.subject for h in await self.all(exam_id)}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.privacy_held_subjects_key(exam_id))
            if remaining:
                pipe.sadd(keys.privacy_held_subjects_key(exam_id), *remaining)
            await pipe.execute()
        if EXAM_WIDE not in remaining:
            await self._unpin(exam_id, hold.subject, remaining)
        await self._audit(exam_id, "legal_hold_released", hold, released_by=by)
        return hold

    async def _versions(self, exam_id: str, subject: str) -> list[dict[str, Any]]:
        listed = await self.regional.list(exam_id)
        return [
            v
            for v in listed
            if not v["DeleteMarker"] and (subject == EXAM_WIDE or _subject(v) == subject)
        ][: self.max_objects]

    async def _pin(self, exam_id: str, subject: str, on: bool) -> int:
        return await self._set(exam_id, await self._versions(exam_id, subject), on)

    async def _unpin(self, exam_id: str, subject: str, still_held: set[str]) -> int:
        versions = [
            v for v in await self._versions(exam_id, subject) if _subject(v) not in still_held
        ]
        return await self._set(exam_id, versions, on=False)

    async def _set(self, exam_id: str, versions: list[dict[str, Any]], on: bool) -> int:
        region = await self.regional.region_of(exam_id)
        gate = asyncio.Semaphore(_PIN_CONCURRENCY)

        async def one(version: dict[str, Any]) -> None:
            async with gate:
                await self.regional.set_legal_hold(
                    region, str(version["Key"]), str(version["VersionId"]), on
                )

        await asyncio.gather(*(one(v) for v in versions))
        return len(versions)

    async def _audit(self, exam_id: str, kind: str, hold: Hold, **extra: Any) -> None:
        region = await self.regional.region_of(exam_id)
        log = AuditLog(self.regional.stores, self.redis, region, keys.STATE_NAMES)
        await log.append(kind, {**asdict(hold), **extra}, exam=exam_id)


def _subject(version: dict[str, Any]) -> str:
    parts = str(version["Key"]).split("/")
    return parts[2] if len(parts) > 3 else ""
