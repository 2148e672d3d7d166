"""`examday cluster shards` and `examday staff add`: operations on a running platform."""

from __future__ import annotations

import asyncio
import getpass
import os

import ray

from actors.accounts.staff import StaffRegistry
from actors.rooms.client import RoomRouter
from infra import raycluster
from infra import redis as redis_conn
from infra.settings import Settings
from infra.tokens import StaffRole


async def _shards(settings: Settings, add: int, remove: str | None) -> int:
    redis = redis_conn.connect(settings)
    router = RoomRouter(settings, redis)
    try:
        members = await router.directory.members()
        if add:
            taken = set(members)
            index = 0
            for _ in range(add):
                while f"room-shard-{index}" in taken:
                    index += 1
                name = f"room-shard-{index}"
                taken.add(name)
                await router.add_shard(name)
                print(f"added {name}")
        if remove:
            await _remove(router, remove, members)
        for name in await router.directory.members():
            stats = await (await router.handle(name)).stats.remote()
            print(f"{name:<20} rooms {stats['rooms']:>4}  joined {stats['candidates_joined']:>6}")
    finally:
        await redis.aclose()
    return 0


async def _remove(router: RoomRouter, name: str, members: list[str]) -> None:
    """Take the shard out of the directory, move its rooms to their new owners, then stop it."""
    if name not in members:
        raise SystemExit(f"no room shard {name!r}; shards: {', '.join(members)}")
    if len(members) == 1:
        raise SystemExit("refusing to remove the last room shard")
    handle = await router.handle(name)
    await router.directory.remove(name)
    rooms = await handle.owned_rooms.remote()
    for key in rooms:
        # The new owner takes the room over (fenced) and rebuilds it from the journal.
        await router.ensure_loaded(key)
    await handle.release_lost_rooms.remote()
    ray.kill(handle)
    print(f"removed {name}; moved {len(rooms)} rooms")


def shards(settings: Settings, add: int, remove: str | None) -> int:
    raycluster.connect(settings)
    return asyncio.run(_shards(settings, add, remove))


def add_staff(settings: Settings, username: str, role: StaffRole) -> int:
    """Create a staff account; the password comes from EXAMDAY_NEW_PASSWORD or a prompt."""
    password = os.environ.get("EXAMDAY_NEW_PASSWORD") or getpass.getpass(
        f"password for {username}: "
    )
    if len(password) < 12:
        raise SystemExit("passwords have at least 12 characters")

    async def create() -> None:
        redis = redis_conn.connect(settings)
        try:
            await StaffRegistry(redis).create(username, password, role, None)
        finally:
            await redis.aclose()

    asyncio.run(create())
    print(f"created {role} {username}")
    return 0
