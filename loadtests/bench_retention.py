"""`examday bench retention`: how fast a retention run deletes, receipts and verifies.

In one run, against a private Redis and SeaweedFS on loopback, two exams of
`--objects` recording objects each are swept side by side: one with one
delete in flight, one with `--concurrency` deletes in flight. Printed:
objects written per second, objects deleted (planned, deleted, verified by
listing, receipted) per second for each, their ratio, and the time to verify
the region's audit chain with the receipted objects.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from actors.privacy.audit import verify_region
from actors.privacy.run import Sweeper
from core import keys
from core.exam import Exam, RetentionRule
from core.process_services import open_process
from infra import services
from infra.objectstore import ObjectStores
from infra.regional import RegionalStore
from infra.settings import Settings
from infra.settings.privacy import PrivacySettings
from infra.stack import isolated_settings

REGION = "cn-north"


async def _exam(regional: RegionalStore, objects: int) -> str:
    now = datetime.now(UTC)
    exam = Exam(
        id=f"bench{secrets.token_hex(4)}",
        title="bench",
        starts_at=now - timedelta(hours=3),
        ends_at=now - timedelta(hours=1),
        region=REGION,
        organiser="bench",
        retention=[RetentionRule(data_class="recordings", trigger="exam_end", after_seconds=0)],
    )
    await regional.redis.set(keys.exam_key(exam.id), exam.model_dump_json())
    gate = asyncio.Semaphore(16)

    async def one(index: int) -> None:
        async with gate:
            name = f"s{index:06d}.webm"
            await regional.put(exam.id, "recordings", f"c{index % 50:03d}", name, b"v" * 1024)

    await asyncio.gather(*(one(i) for i in range(objects)))
    return exam.id


async def _sweep(regional: RegionalStore, exam_id: str, concurrency: int) -> dict[str, Any]:
    knobs = PrivacySettings(delete_concurrency=concurrency, delete_batch=100)
    sweeper = Sweeper(knobs, regional.redis, regional, REGION, f"bench-{concurrency}")
    started = time.perf_counter()
    summary = await sweeper.run([exam_id])
    seconds = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "deleted": summary["deleted"],
        "failed_groups": len(summary["failed_groups"]),
        "seconds": round(seconds, 3),
        "objects_per_s": round(summary["deleted"] / seconds, 1),
    }


async def _measure(settings: Settings, objects: int, concurrency: int) -> dict[str, Any]:
    process = open_process(settings, None)
    try:
        regional = process.regional
        started = time.perf_counter()
        exams = [await _exam(regional, objects), await _exam(regional, objects)]
        written = 2 * objects / (time.perf_counter() - started)
        serial = await _sweep(regional, exams[0], 1)
        parallel = await _sweep(regional, exams[1], concurrency)
        started = time.perf_counter()
        report = await verify_region(regional, REGION)
        verify_seconds = time.perf_counter() - started
    finally:
        await process.close()
    return {
        "objects_per_exam": objects,
        "written_per_s": round(written, 1),
        "serial": serial,
        "parallel": parallel,
        "ratio": round(parallel["objects_per_s"] / serial["objects_per_s"], 2),
        "audit_entries": report.head,
        "audit_verify_ok": report.ok,
        "audit_verify_seconds": round(verify_seconds, 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="examday bench retention", description=__doc__)
    parser.add_argument("--objects", type=int, default=1000, help="objects per exam (1-100000)")
    parser.add_argument("--concurrency", type=int, default=8, help="deletes in flight (1-64)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if not (1 <= args.objects <= 100_000 and 1 <= args.concurrency <= 64):
        parser.error("--objects 1-100000, --concurrency 1-64")
    with tempfile.TemporaryDirectory(prefix="examday-bench-retention-") as state:
        settings = isolated_settings(Path(state))
        redis = services.redis_process(settings)
        weed = services.seaweed_process(settings)
        try:
            redis.start()
            weed.start()
            redis.wait_healthy(lambda: services.redis_healthy(settings), 20)
            weed.wait_healthy(lambda: services.seaweed_healthy(settings), 60)
            ObjectStores(settings).ensure_buckets()
            result = asyncio.run(_measure(settings, args.objects, args.concurrency))
        finally:
            weed.stop()
            redis.stop()
    if args.json:
        print(json.dumps(result))
    else:
        for name, value in result.items():
            print(f"{name:>22}: {value}")
    return 0 if result["audit_verify_ok"] else 1
