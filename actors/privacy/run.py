"""One retention run of a region: plan what is due, delete it, verify by listing, receipt it.

    plan      due groups of every exam in scope (its policy, or everything for a purge)
              -> object versions, delete markers and Redis keys, saved in one transaction
    delete    what is not marked deleted yet, in batches; a held object (S3 Object
              Lock legal hold, AccessDenied) is marked kept, never retried
    verify    list each group's prefix again: a planned version still there is deleted
              again, a bounded number of times, else the group is reported failed
    receipt   one audit entry per group (and per `RECEIPT_OBJECTS` objects) with the
              keys, version ids, sizes and etags that went, and the policy clause

A crash anywhere resumes from the Redis state (`actors.privacy.state`): a
delete is idempotent, and a receipt's audit entry id is derived from the run
and group, so a resumed run never receipts an object twice.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from redis.asyncio import Redis

from actors.privacy.plan import Item, Planner, held_item, held_subjects
from actors.privacy.policy import (
    ALL_SUBJECTS,
    Due,
    due_groups,
    erasure_groups,
    exam_facts,
    region_exams,
)
from actors.privacy.state import RunState
from core import keys
from core.exam import Exam
from core.keys import ANONYMOUS
from infra.audit import AuditLog
from infra.regional import RegionalStore
from infra.settings.privacy import PrivacySettings

RECEIPT_OBJECTS = 5000
VERIFY_ROUNDS = 3
# A run's mode for one candidate's deletion request: it plans that request's groups
# alone, from the candidate's own prefixes and records, and reads nothing else of the
# exam (no rosters, no journals): a data subject's call costs their data, not the exam's.
ERASURE = "erasure:"


# A run's mode for a withdrawn biometric consent: the candidate's face class (template,
# enrolment photo, face record) goes now, whatever the exam's schedule.
BIOMETRIC = "biometric:"


def erasure_mode(cid: str) -> str:
    return f"{ERASURE}{cid}"


def biometric_mode(cid: str) -> str:
    return f"{BIOMETRIC}{cid}"


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
        self.audit = AuditLog(regional.stores, redis, region, keys.STATE_NAMES)
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

    async def _plan(self, mode: str, scope: list[str] | None) -> tuple[list[Due], list[Item], bool]:
        now, limit = time.time(), self.settings.max_objects_per_run
        groups: list[Due] = []
        items: list[Item] = []
        if scope is None:
            scope = await region_exams(self.redis, self.regional, self.region)
            # Logs sent before login have no exam: a region's shutdown takes them too.
            scope += [ANONYMOUS] if mode == "purge" else []
        for exam_id in scope:
            due, rooms = await self._due(exam_id, mode, now)
            held = await held_subjects(self.redis, exam_id)
            for group in due:
                found = await self.planner.items(group, held, rooms, limit - len(items))
                if found:
                    groups.append(group)
                    items += found
                if len(items) >= limit:
                    return groups, items, True
        return groups, items, False

    async def _due(
        self, exam_id: str, mode: str, now: float
    ) -> tuple[list[Due], dict[str, list[str]]]:
        raw = await self.redis.get(keys.exam_key(exam_id))
        exam = Exam.model_validate_json(raw) if raw is not None else None
        if exam is not None and exam.region != self.region:
            return [], {}
        if mode.startswith(ERASURE):
            return await self._erasure_groups(exam, mode.removeprefix(ERASURE), now), {}
        if mode.startswith(BIOMETRIC):
            if exam is None:
                return [], {}
            cid = mode.removeprefix(BIOMETRIC)
            clause = "biometric consent withdrawn"
            return [Due(exam.id, "biometric_withdrawal", "face", cid, clause, now)], {}
        facts = await exam_facts(self.redis, exam) if exam is not None else None
        rooms = facts.rooms if facts is not None else {}
        if mode == "purge":
            # Objects of an exam whose record is gone are in this region's bucket: purged too.
            return await self._purge_groups(exam_id, rooms, now), rooms
        return (due_groups(facts, now) if facts is not None else []), rooms

    async def _erasure_groups(self, exam: Exam | None, cid: str, now: float) -> list[Due]:
        if exam is None or now < exam.ends_at.timestamp():
            return []
        raw = await self.redis.hget(keys.privacy_erasures_key(exam.id), cid)
        request = json.loads(raw) if raw is not None else None
        if request is None or request.get("status") == "done":
            return []
        return erasure_groups(exam, cid, str(request["id"]))

    async def _purge_groups(
        self, exam_id: str, rooms: dict[str, list[str]], now: float
    ) -> list[Due]:
        listed = await self.regional.list_region(self.region, f"{exam_id}/")
        classes = sorted({str(v["Key"]).split("/")[1] for v in listed})
        groups = [Due(exam_id, "purge", c, ALL_SUBJECTS, "purge", now) for c in classes]
        groups += [Due(exam_id, "purge", "timelines", room, "purge", now) for room in rooms]
        return [*groups, Due(exam_id, "purge", "records", ALL_SUBJECTS, "purge", now)]

    # -- delete, verify, receipt ------------------------------------------------------

    async def _execute(self, run_id: str, mode: str) -> dict[str, Any]:
        groups, items = await self.state.plan(run_id)
        done = await self.state.members(run_id, "deleted") | await self.state.members(
            run_id, "kept"
        )
        pending = [i for i in items if i.id not in done]
        for start in range(0, len(pending), self.settings.delete_batch):
            await self.state.lock(self.owner, self.settings.run_lock_seconds)
            batch = pending[start : start + self.settings.delete_batch]
            await self._delete_batch(run_id, batch, await self._held_now(groups, batch))
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

    async def _held_now(self, groups: dict[str, Due], batch: list[Item]) -> set[str]:
        """Items a hold placed since the plan now covers (the S3 lock may not be on yet)."""
        held: dict[str, set[str]] = {}
        found = set()
        for item in batch:
            due = groups[item.group]
            if due.exam not in held:
                held[due.exam] = await held_subjects(self.redis, due.exam)
            if held_item(item, due, held[due.exam]):
                found.add(item.id)
        return found

    async def _delete_batch(self, run_id: str, batch: list[Item], held: set[str]) -> None:
        gate = asyncio.Semaphore(self.settings.delete_concurrency)

        async def one(item: Item) -> bool:
            if item.id in held:
                return False
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
                await self._delete_batch(run_id, left, await self._held_now(groups, left))
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
            raw = await self.redis.hget(keys.privacy_erasures_key(due.exam), due.subject)
            if raw is not None:
                request = {**json.loads(raw), "status": "done", "done_at": time.time()}
                await self.redis.hset(
                    keys.privacy_erasures_key(due.exam), due.subject, json.dumps(request)
                )


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
