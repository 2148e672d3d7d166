"""One retention run of a region: plan what is due, delete it, verify by listing, receipt it.

    plan      due groups of every exam in scope (its policy, or everything for a purge)
              -> object versions, delete markers and Redis keys, saved in one transaction
    delete    what is not marked deleted yet, in batches; a held object (S3 Object
              Lock legal hold, AccessDenied) is marked kept, never retried
    verify    list each group's prefix again: a planned version still there is deleted
              again, a bounded number of times, else the group is reported failed
    receipt   one audit entry per group (and per `RECEIPT_OBJECTS` objects) with the
              keys, version ids, sizes and etags that went, and the policy clause

A crash anywhere resumes from the Redis state (`actors.retention_state`): a
delete is idempotent, and a receipt's audit entry id is derived from the run
and group, so a resumed run never receipts an object twice.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from redis.asyncio import Redis

from actors.retention_plan import Item, Planner, held_subjects
from actors.retention_policy import ALL_SUBJECTS, Due, due_groups, erasures_key, exam_facts
from actors.retention_settings import PrivacySettings
from actors.retention_state import RunState
from api.models import Exam
from infra.audit import AuditLog
from infra.redis import text
from infra.regional import RegionalStore

RECEIPT_OBJECTS = 5000
VERIFY_ROUNDS = 3
_SCAN_ROUNDS = 100_000


class Sweeper:
    def __init__(
        self,
        settings: PrivacySettings,
        redis: Redis,
        regional: RegionalStore,
        region: str,
        owner: str,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.regional = regional
        self.region = region
        self.owner = owner
        self.audit = AuditLog(regional.stores, redis, region)
        self.state = RunState(redis, region)
        self.planner = Planner(redis, regional, region)

    async def run(self, exams: list[str] | None = None, mode: str = "sweep") -> dict[str, Any]:
        """Finish an interrupted run first, then run over `exams` (None: the whole region)."""
        await self.state.lock(self.owner, self.settings.run_lock_seconds)
        try:
            resumed = await self.resume()
            run_id = await self.state.begin(mode, exams)
            summary = await self._plan_and_execute(run_id, mode, exams)
            return {**summary, "resumed": resumed}
        finally:
            await self.state.unlock(self.owner)

    async def resume(self) -> dict[str, Any] | None:
        found = await self.state.current()
        if found is None:
            return None
        run_id, fields = found
        if fields.get("status") == "planned":
            return await self._execute(run_id, fields.get("mode", "sweep"))
        return await self._plan_and_execute(
            run_id, fields.get("mode", "sweep"), json.loads(fields.get("scope", "null"))
        )

    async def _plan_and_execute(
        self, run_id: str, mode: str, exams: list[str] | None
    ) -> dict[str, Any]:
        groups, items, truncated = await self._plan(mode, exams)
        await self.state.save_plan(run_id, groups, items, truncated)
        return await self._execute(run_id, mode)

    # -- plan ---------------------------------------------------------------------

    async def exams(self) -> list[str]:
        """Exams of this region: those with objects in its bucket and those in Redis."""
        found = set(await self.regional.exams_in(self.region))
        cursor: int = 0
        for _ in range(_SCAN_ROUNDS):
            cursor, keys = await self.redis.scan(cursor, match="examday:exam:*", count=1000)
            found.update(parts[2] for k in keys if len(parts := text(k).split(":")) == 3)
            if cursor == 0:
                break
        return sorted(found)

    async def _plan(self, mode: str, scope: list[str] | None) -> tuple[list[Due], list[Item], bool]:
        now, limit = time.time(), self.settings.max_objects_per_run
        groups: list[Due] = []
        items: list[Item] = []
        for exam_id in scope if scope is not None else await self.exams():
            raw = await self.redis.get(f"examday:exam:{exam_id}")
            if raw is None:
                continue
            exam = Exam.model_validate_json(raw)
            if exam.region != self.region:
                continue
            facts = await exam_facts(self.redis, exam)
            due = (
                await self._purge_groups(exam, facts.rooms, now)
                if mode == "purge"
                else due_groups(facts, now)
            )
            held = await held_subjects(self.redis, exam.id)
            for group in due:
                found = await self.planner.items(group, held, facts.rooms, limit - len(items))
                if found:
                    groups.append(group)
                    items += found
                if len(items) >= limit:
                    return groups, items, True
        if mode == "purge" and scope is None:
            # Logs sent before login have no exam: a region's shutdown takes them too.
            anonymous = Due("_anonymous", "purge", "logs", ALL_SUBJECTS, "purge", now)
            found = await self.planner.items(anonymous, set(), {}, limit - len(items))
            groups += [anonymous] if found else []
            items += found
        return groups, items, False

    async def _purge_groups(self, exam: Exam, rooms: dict[str, list[str]], now: float) -> list[Due]:
        listed = await self.regional.list_region(self.region, f"{exam.id}/")
        classes = sorted({str(v["Key"]).split("/")[1] for v in listed})
        groups = [Due(exam.id, "purge", c, ALL_SUBJECTS, "purge", now) for c in classes]
        groups += [Due(exam.id, "purge", "timelines", room, "purge", now) for room in rooms]
        return [*groups, Due(exam.id, "purge", "records", ALL_SUBJECTS, "purge", now)]

    # -- delete, verify, receipt ------------------------------------------------------

    async def _execute(self, run_id: str, mode: str) -> dict[str, Any]:
        groups, items = await self.state.plan(run_id)
        done = await self.state.members(run_id, "deleted") | await self.state.members(
            run_id, "kept"
        )
        pending = [i for i in items if i.id not in done]
        for start in range(0, len(pending), self.settings.delete_batch):
            await self.state.lock(self.owner, self.settings.run_lock_seconds)
            await self._delete_batch(run_id, pending[start : start + self.settings.delete_batch])
        kept = await self.state.members(run_id, "kept")
        by_group: dict[str, list[Item]] = {group_id: [] for group_id in groups}
        for item in items:
            if item.id not in kept:
                by_group.setdefault(item.group, []).append(item)
        failed = await self._verify(run_id, groups, by_group)
        receipts = await self._receipts(run_id, groups, by_group, failed)
        await self._close_erasures(groups, failed)
        summary = {
            "run": run_id,
            "region": self.region,
            "mode": mode,
            "groups": len(groups),
            "planned": len(items),
            "deleted": len(items) - len(kept),
            "kept": len(kept),
            "failed_groups": sorted(failed),
            "receipts": receipts,
            "finished": time.time(),
        }
        await self.state.finish(run_id, summary)
        return summary

    async def _delete_batch(self, run_id: str, batch: list[Item]) -> None:
        gate = asyncio.Semaphore(self.settings.delete_concurrency)

        async def one(item: Item) -> bool:
            async with gate:
                return await self._delete(item)

        results = await asyncio.gather(*(one(i) for i in batch))
        await self.state.mark(
            run_id, "deleted", (i.id for i, ok in zip(batch, results, strict=True) if ok)
        )
        await self.state.mark(
            run_id, "kept", (i.id for i, ok in zip(batch, results, strict=True) if not ok)
        )

    async def _delete(self, item: Item) -> bool:
        if item.kind == "redis":
            await self.redis.delete(item.key)
            return True
        return await self.regional.delete_version(self.region, item.key, item.version_id)

    async def _verify(
        self, run_id: str, groups: dict[str, Due], by_group: dict[str, list[Item]]
    ) -> set[str]:
        """Groups where a deleted item is still listed after `VERIFY_ROUNDS` deletes."""
        failed: set[str] = set()
        for group_id, due in groups.items():
            for _ in range(VERIFY_ROUNDS):
                left = await self._still_there(due, by_group[group_id])
                if not left:
                    break
                await self._delete_batch(run_id, left)
            else:
                failed.add(group_id)
        return failed

    async def _still_there(self, due: Due, items: list[Item]) -> list[Item]:
        redis_items = [i for i in items if i.kind == "redis"]
        left = [i for i in redis_items if await self.redis.exists(i.key)]
        objects = [i for i in items if i.kind == "s3"]
        if objects:
            prefix = f"{due.exam}/{due.storage_class}/"
            if due.subject != ALL_SUBJECTS:
                prefix += f"{due.subject}/"
            listed = await self.regional.list_region(self.region, prefix)
            present = {(str(v["Key"]), str(v["VersionId"])) for v in listed}
            left += [i for i in objects if (i.key, i.version_id) in present]
        return left

    async def _receipts(
        self,
        run_id: str,
        groups: dict[str, Due],
        by_group: dict[str, list[Item]],
        failed: set[str],
    ) -> list[int]:
        seqs: list[int] = []
        for group_id, due in sorted(groups.items()):
            gone = by_group[group_id]
            for part, start in enumerate(range(0, len(gone), RECEIPT_OBJECTS)):
                receipt_id = f"{run_id}:{group_id}:{part}"
                seq = await self.state.receipt(run_id, receipt_id)
                if seq is None:
                    entry = await self.audit.append(
                        "deletion",
                        receipt_body(
                            run_id,
                            due,
                            gone[start : start + RECEIPT_OBJECTS],
                            group_id not in failed,
                        ),
                        exam=due.exam,
                        entry_id=receipt_id,
                    )
                    seq = entry.seq
                    await self.state.receipted(run_id, receipt_id, seq)
                seqs.append(seq)
        return seqs

    async def _close_erasures(self, groups: dict[str, Due], failed: set[str]) -> None:
        for due in groups.values():
            if due.policy_class != "erasure" or due.group_id in failed:
                continue
            raw = await self.redis.hget(erasures_key(due.exam), due.subject)
            if raw is not None:
                request = {**json.loads(raw), "status": "done", "done_at": time.time()}
                await self.redis.hset(erasures_key(due.exam), due.subject, json.dumps(request))


def receipt_body(run_id: str, due: Due, items: list[Item], verified: bool) -> dict[str, Any]:
    return {
        "run": run_id,
        "exam": due.exam,
        "data_class": due.storage_class,
        "policy_class": due.policy_class,
        "subject": due.subject,
        "clause": due.clause,
        "due_at": due.due_at,
        "deleted_at": time.time(),
        "verified_gone": verified,
        "objects": [
            {
                "key": i.key,
                "version_id": i.version_id,
                "size": i.size,
                "etag": i.etag,
                "delete_marker": i.delete_marker,
            }
            for i in items
            if i.kind == "s3"
        ],
        "redis_keys": [i.key for i in items if i.kind == "redis"],
    }
