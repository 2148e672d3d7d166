"""Under overload live media and presence run first: actors take their role's niceness."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import ray
from fastapi import FastAPI

from actors.media import shard as media_shard
from actors.rooms import client as rooms
from actors.updates.manifest import ACTOR_NAME as UPDATE_MANIFEST
from core import keys
from infra.priority import Priority
from infra.settings import Settings


def thread_niceness(pid: int) -> set[int]:
    """The niceness values of the threads of process `pid` (field 19 of each thread's stat)."""
    found = set()
    for task in (Path("/proc") / str(pid) / "task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        # The command name (field 2) may hold spaces: count from its closing ')'.
        found.add(int(stat[stat.rindex(")") + 2 :].split()[16]))
    return found


async def niceness_of(name: str, namespace: str) -> set[int]:
    handle: Any = await asyncio.to_thread(ray.get_actor, name, namespace=namespace)
    pid = await handle.__ray_call__.remote(lambda _: os.getpid())
    return thread_niceness(int(pid))


async def test_every_thread_of_each_actor_runs_at_its_roles_niceness(
    app: FastAPI, settings: Settings
) -> None:
    namespace = settings.ray_namespace
    expected = {
        media_shard.shard_name(0): {Priority.LIVE},
        rooms.shard_name(0): {Priority.LIVE},
        UPDATE_MANIFEST: {Priority.LIVE},
        keys.ingest_shard_name(0): {Priority.QUEUED},
    }
    found = {name: await niceness_of(name, namespace) for name in expected}
    # Ray's default would be 15 for every one of them; Linux keeps niceness per thread.
    assert found == expected
    assert thread_niceness(os.getpid()) == {0}  # the gateway (this process) is left as it was
