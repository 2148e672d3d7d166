"""Candidates' correction requests and complaints, and the organiser's answers.

A request's text is personal data (a corrected name, what went wrong): it is sealed
with the exam's data key before it reaches Redis, and opened only for the candidate
who filed it and the exam's organiser. The records live under the exam's prefix, in
one hash that the `requests` retention class deletes.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, Literal

from redis.asyncio import Redis

from core import keys
from infra.crypto import DataKeys
from infra.errors import Conflict, NotFound, RateLimited

RequestKind = Literal["correction", "complaint"]
Answer = Literal["accepted", "refused", "done"]
_PURPOSE = "rights:text"


class RightsRequests:
    def __init__(self, redis: Redis, data_keys: DataKeys) -> None:
        self.redis = redis
        self.keys = data_keys

    async def file(
        self, exam_id: str, cid: str, kind: str, field: str | None, body: str, limit: int
    ) -> dict[str, Any]:
        mine = await self.list(exam_id, cid)
        if len(mine) >= limit:
            raise RateLimited("you have filed the most requests allowed", reason="request_limit")
        record = {
            "id": f"q{secrets.token_hex(6)}",
            "cid": cid,
            "kind": kind,
            "field": field,
            "text": await self._seal(exam_id, body),
            "status": "open",
            "at": time.time(),
        }
        await self.redis.hset(keys.rights_requests_key(exam_id), record["id"], json.dumps(record))
        return await self._opened(exam_id, record)

    async def list(self, exam_id: str, cid: str | None = None) -> list[dict[str, Any]]:
        raw = await self.redis.hvals(keys.rights_requests_key(exam_id))
        found = sorted((json.loads(r) for r in raw), key=lambda r: float(r["at"]))
        return [await self._opened(exam_id, r) for r in found if cid is None or r["cid"] == cid]

    async def answer(
        self, exam_id: str, request_id: str, status: str, answer: str, by: str
    ) -> dict[str, Any]:
        key = keys.rights_requests_key(exam_id)
        raw = await self.redis.hget(key, request_id)
        if raw is None:
            raise NotFound("no such request", reason="request_not_found")
        record = json.loads(raw)
        if record["status"] != "open":
            raise Conflict("this request has an answer already", reason="request_answered")
        record.update(
            status=status, answer=await self._seal(exam_id, answer), by=by, answered_at=time.time()
        )
        await self.redis.hset(key, request_id, json.dumps(record))
        return await self._opened(exam_id, record)

    async def _seal(self, exam_id: str, value: str) -> str:
        return await self.keys.seal_text(exam_id, _PURPOSE, value)

    async def _opened(self, exam_id: str, record: dict[str, Any]) -> dict[str, Any]:
        out = dict(record)
        for name in ("text", "answer"):
            if out.get(name):
                out[name] = await self.keys.open_text(exam_id, _PURPOSE, out[name])
        return out
