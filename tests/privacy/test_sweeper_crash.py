"""A retention actor killed with SIGKILL in the middle of a run: the run completes after the
restart, nothing is left behind, and no object is receipted twice."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Any

import httpx
import ray
from fastapi import FastAPI
from ray.exceptions import RayActorError

from actors.privacy import retention
from actors.privacy.state import RunState
from cluster.privacy_cli import verify_regions
from core import keys
from infra.audit import AuditLog
from infra.settings.privacy import PrivacySettings
from infra.telemetry import actor_call
from tests.privacy.conftest import ended_exam, runtime_of
from tests.privacy.helpers import receipted, versions

OBJECTS = 600
CANDIDATES = 6


async def _fill(runtime: Any, exam_id: str, cids: list[str]) -> None:
    gate = asyncio.Semaphore(16)

    async def one(index: int) -> None:
        async with gate:
            cid = cids[index % len(cids)]
            await runtime.regional.put(
                exam_id, "recordings", cid, f"seg-{index:05d}.webm", b"x" * 64
            )

    await asyncio.gather(*(one(i) for i in range(OBJECTS)))


async def test_a_killed_sweeper_resumes_and_receipts_each_object_once(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    numbers = [f"{3000 + i}" for i in range(CANDIDATES)]
    world = await ended_exam(client, runtime, {"r1": numbers}, region="cn-east")
    cids = [world.candidate_ids[n] for n in numbers]
    await _fill(runtime, world.exam_id, cids)
    written = await versions(runtime, "cn-east", f"{world.exam_id}/")
    assert len(written) == OBJECTS

    # A sweeper of its own with small batches, so that a run takes many steps.
    slow = runtime.settings.model_copy(
        update={"privacy": PrivacySettings(delete_batch=5, delete_concurrency=1)}
    )
    name = f"retention-cn-east-crash-{world.exam_id}"
    handle = await asyncio.to_thread(retention.get_or_create, slow, "cn-east", name)
    pid = (await actor_call(handle.stats))["pid"]
    state = RunState(runtime.redis, "cn-east")
    run = actor_call(handle.run, [world.exam_id])
    progress: dict[str, Any] = {}
    for _ in range(2000):
        progress = await state.progress()
        if progress.get("status") == "planned" and progress["deleted"] >= 50:
            break
        await asyncio.sleep(0.01)
    assert 50 <= progress["deleted"] < OBJECTS, progress
    os.kill(pid, signal.SIGKILL)

    # The restarted actor finishes the interrupted run (by itself, or for the retried call).
    with contextlib.suppress(RayActorError):
        await asyncio.wait_for(run, timeout=120)
    await asyncio.wait_for(actor_call(handle.run, [world.exam_id]), timeout=120)
    assert (await actor_call(handle.stats))["pid"] != pid
    history = await actor_call(handle.history, 10)
    interrupted = [h for h in history if h["run"] == progress["run"]]
    assert [(h["planned"], h["deleted"], h["failed_groups"]) for h in interrupted] == [
        (OBJECTS, OBJECTS, [])
    ]
    assert await versions(runtime, "cn-east", f"{world.exam_id}/") == set()
    names = receipted([e.entry for e in await _entries(runtime, world.exam_id)])
    assert len(names) == len(set(names)) == OBJECTS
    assert set(names) == written
    [report] = await verify_regions(runtime.settings, "cn-east")
    assert report.ok, report.problems
    with contextlib.suppress(Exception):
        ray.kill(handle)


async def _entries(runtime: Any, exam_id: str) -> list[Any]:
    return await AuditLog(runtime.stores, runtime.redis, "cn-east", keys.STATE_NAMES).exam_entries(
        exam_id
    )
