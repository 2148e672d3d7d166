"""Run state of a region's retention sweeper, kept in Redis so a restarted run resumes.

    examday:retention:{region}:lock               the sweeper running now (owner, TTL)
    examday:retention:{region}:current            the id of the unfinished run, if any
    examday:retention:{region}:run:{id}           status, scope, counters
    examday:retention:{region}:run:{id}:groups    group id -> Due (what is due, and why)
    examday:retention:{region}:run:{id}:items     item id -> Item (what the run deletes)
    examday:retention:{region}:run:{id}:deleted   item ids gone (set)
    examday:retention:{region}:run:{id}:kept      item ids a legal hold kept (set)
    examday:retention:{region}:run:{id}:receipts  receipt id -> audit seq
    examday:retention:{region}:runs               summaries of finished runs (newest first)

A plan is written in one transaction together with `status=planned`; a run
found in `planning` after a crash is planned again from scratch, a run found
`planned` resumes deleting what is not marked deleted yet.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis

from actors.privacy.plan import Item
from actors.privacy.policy import Due
from core import keys
from infra.errors import Conflict
from infra.redis import text

KEEP_FINISHED_SECONDS = 86400
MAX_SUMMARIES = 200

_TAKE = """
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


class RetentionBusy(Conflict):
    default_reason = "retention_busy"
    title = "Another retention run of this region is in progress"


class RunState:
    def __init__(self, redis: Redis, region: str) -> None:
        self.redis = redis
        self.region = region
        self.base = keys.privacy_retention_key(region)
        self._take = redis.register_script(_TAKE)

    def key(self, run_id: str, part: str = "") -> str:
        return f"{self.base}:run:{run_id}" + (f":{part}" if part else "")

    # -- the lock: one sweeper per region; the same owner (a restarted actor) may retake it

    async def lock(self, owner: str, seconds: float) -> None:
        if not await self._take(keys=[f"{self.base}:lock"], args=[owner, int(seconds * 1000)]):
            raise RetentionBusy(f"a retention run of {self.region} is in progress", retry_after=5)

    async def unlock(self, owner: str) -> None:
        raw = await self.redis.get(f"{self.base}:lock")
        if raw is not None and text(raw) == owner:
            await self.redis.delete(f"{self.base}:lock")

    # -- runs -------------------------------------------------------------------

    async def current(self) -> tuple[str, dict[str, str]] | None:
        raw = await self.redis.get(f"{self.base}:current")
        if raw is None:
            return None
        run_id = text(raw)
        fields = await self.redis.hgetall(self.key(run_id))
        return run_id, {text(k): text(v) for k, v in fields.items()}

    async def begin(self, mode: str, scope: list[str] | None) -> str:
        run_id = f"{int(time.time())}-{uuid.uuid4().hex[:8]}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self.key(run_id),
                mapping={
                    "status": "planning",
                    "mode": mode,
                    "scope": json.dumps(scope),
                    "started": time.time(),
                },
            )
            pipe.set(f"{self.base}:current", run_id)
            await pipe.execute()
        return run_id

    async def save_plan(
        self, run_id: str, groups: list[Due], items: list[Item], truncated: bool
    ) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            for part in ("groups", "items", "deleted", "kept", "receipts"):
                pipe.delete(self.key(run_id, part))
            if groups:
                pipe.hset(
                    self.key(run_id, "groups"), mapping={g.group_id: g.to_json() for g in groups}
                )
            for start in range(0, len(items), 1000):
                chunk = items[start : start + 1000]
                pipe.hset(self.key(run_id, "items"), mapping={i.id: i.to_json() for i in chunk})
            pipe.hset(
                self.key(run_id),
                mapping={"status": "planned", "planned": len(items), "truncated": int(truncated)},
            )
            await pipe.execute()

    async def plan(self, run_id: str) -> tuple[dict[str, Due], list[Item]]:
        groups = await self.redis.hgetall(self.key(run_id, "groups"))
        items = await self.redis.hvals(self.key(run_id, "items"))
        return (
            {text(k): Due.from_json(v) for k, v in groups.items()},
            sorted(
                (Item.from_json(v) for v in items), key=lambda i: (i.group, i.key, i.version_id)
            ),
        )

    async def members(self, run_id: str, part: str) -> set[str]:
        return {text(m) for m in await self.redis.smembers(self.key(run_id, part))}

    async def mark(self, run_id: str, part: str, ids: Iterable[str]) -> None:
        ids = list(ids)
        if ids:
            await self.redis.sadd(self.key(run_id, part), *ids)

    async def receipt(self, run_id: str, receipt_id: str) -> int | None:
        raw = await self.redis.hget(self.key(run_id, "receipts"), receipt_id)
        return int(raw) if raw is not None else None

    async def receipted(self, run_id: str, receipt_id: str, seq: int) -> None:
        await self.redis.hset(self.key(run_id, "receipts"), receipt_id, seq)

    async def finish(self, run_id: str, summary: dict[str, Any]) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.key(run_id), mapping={"status": "done", "finished": time.time()})
            pipe.lpush(f"{self.base}:runs", json.dumps(summary))
            pipe.ltrim(f"{self.base}:runs", 0, MAX_SUMMARIES - 1)
            pipe.delete(f"{self.base}:current")
            for part in ("", "groups", "items", "deleted", "kept", "receipts"):
                pipe.expire(self.key(run_id, part), KEEP_FINISHED_SECONDS)
            await pipe.execute()

    async def summaries(self, limit: int = 20) -> list[dict[str, Any]]:
        return [json.loads(r) for r in await self.redis.lrange(f"{self.base}:runs", 0, limit - 1)]

    async def progress(self) -> dict[str, Any]:
        """How far the unfinished run is (for operators and tests): planned and deleted."""
        found = await self.current()
        if found is None:
            return {"run": None}
        run_id, fields = found
        deleted = await self.redis.scard(self.key(run_id, "deleted"))
        return {"run": run_id, **fields, "deleted": deleted}
