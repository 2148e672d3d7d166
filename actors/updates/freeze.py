"""Freeze windows: the regions where an exam is running (with margins), so no rollout step
may advance there.

The exam registry keeps `examday:exam:{id}` (JSON with `starts_at`, `ends_at`,
`region`) and one set of exam ids per organiser, but no index by time; this
module reads the organisers' sets (SCAN, bounded) and the exams themselves.
That is fine for the rare step of a rollout; a time index kept by the exam
registry would make it cheaper.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis

from core import keys
from infra.redis import text

_SCAN_ROUNDS = 10_000
_CHUNK = 500


@dataclass(frozen=True)
class ExamWindow:
    exam: str
    region: str
    starts_at: datetime
    ends_at: datetime


async def exam_ids(redis: Redis) -> set[str]:
    ids: set[str] = set()
    cursor: Any = 0
    for _ in range(_SCAN_ROUNDS):
        cursor, found = await redis.scan(cursor, match=keys.STAFF_EXAMS, count=_CHUNK)
        for key in found:
            ids |= {text(member) for member in await redis.smembers(text(key))}
        if int(cursor) == 0:
            break
    return ids


async def exam_windows(redis: Redis) -> list[ExamWindow]:
    windows = []
    ordered = sorted(await exam_ids(redis))
    for start in range(0, len(ordered), _CHUNK):
        chunk = ordered[start : start + _CHUNK]
        raw: list[Any] = await redis.mget([keys.exam_key(exam) for exam in chunk])
        for exam, value in zip(chunk, raw, strict=True):
            if value is not None:
                windows.append(_window(exam, json.loads(value)))
    return windows


def _window(exam: str, record: dict[str, Any]) -> ExamWindow:
    return ExamWindow(
        exam,
        str(record["region"]),
        _aware(datetime.fromisoformat(record["starts_at"])),
        _aware(datetime.fromisoformat(record["ends_at"])),
    )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def frozen(
    windows: Iterable[ExamWindow], now: datetime, before: timedelta, after: timedelta
) -> dict[str, int]:
    """Regions frozen at `now`, with how many exams freeze each."""
    counts: dict[str, int] = {}
    for window in windows:
        if window.starts_at - before <= now <= window.ends_at + after:
            counts[window.region] = counts.get(window.region, 0) + 1
    return counts
