"""`examday cluster drain NODE`: empty one Ray node before it goes away.

In order: the node is marked draining in Ray's GCS (no new actor lands there,
restarts go elsewhere; if Ray refuses, nothing else is done); its room shards
hand their rooms over exactly as `examday cluster shards --remove` does (fenced
takeover by the new owners, who rebuild from the journal), with a replacement
shard elsewhere when fewer than `EXAMDAY_ROOM_SHARDS` would remain; its media
shards leave the media directory (no new room is assigned to them), each room
they serve gets a `{"type": "reconnect", ...}` event in its journal (clients
re-POST their WHIP/WHEP offers, which now go to another shard, started first when fewer
than `EXAMDAY_MEDIA_SHARDS` would remain) and, once empty
or at the deadline, they drain (recordings flush) and stop; every other named
actor on the node is restarted by Ray elsewhere. The report says when no named
actor of the namespace is left on the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import ray

from actors.media.client import MediaRouter
from actors.media.shard import MediaShard
from actors.media.shard import shard_name as media_shard_name
from actors.rooms.client import RoomRouter, shard_name
from actors.rooms.shard import RoomShard
from cluster import placement, ray_private, shards
from core import keys
from infra import raycluster
from infra import redis as redis_conn
from infra.errors import ConfigError, Conflict, NotFound
from infra.progress import Progress, clock_text, follow
from infra.redis import text
from infra.settings import Settings
from infra.telemetry import actor_call

POLL_S = 0.5
LOOKUP_TIMEOUT_S = 10.0
RECONNECT = "reconnect"


@dataclass
class DrainReport:
    node_id: str
    ip: str
    rooms_moved: dict[str, int] = field(default_factory=dict)  # room shard -> rooms
    replacements: list[str] = field(default_factory=list)
    media_rooms: dict[str, int] = field(default_factory=dict)  # media shard -> rooms told
    restarted: list[str] = field(default_factory=list)
    remaining: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.remaining


def resolve_node(node: str) -> dict[str, Any]:
    """The alive node whose id starts with `node`, or whose IP is `node` (blocking)."""
    nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
    alive = [n for n in nodes if n.get("Alive")]
    found = [n for n in alive if node in (n["NodeManagerAddress"],) or n["NodeID"].startswith(node)]
    if len(found) != 1:
        known = ", ".join(f"{n['NodeID'][:12]} ({n['NodeManagerAddress']})" for n in alive)
        raise NotFound(
            f"{len(found)} alive nodes match {node!r}; nodes: {known}", reason="node_not_found"
        )
    return found[0]


def mark_draining(node_id: str, deadline_s: float) -> None:
    """Ask the GCS to schedule nothing new on the node (what the autoscaler does).

    Ray has no public call for this: see `cluster.ray_private`."""
    ray_private.drain_node(node_id, deadline_s, "examday cluster drain")


def _node_of(self: Any) -> str:
    return str(ray.get_runtime_context().get_node_id())


async def placements(namespace: str, attempts: int = 3) -> dict[str, str]:
    """Named actor -> node id, for the namespace's actors that answer within the attempts."""
    names = await asyncio.to_thread(ray.util.list_named_actors)

    async def where(name: str) -> tuple[str, str | None]:
        for _ in range(attempts):
            try:
                handle = await asyncio.to_thread(ray.get_actor, name, namespace=namespace)
                node: Any = await asyncio.wait_for(
                    handle.__ray_call__.remote(_node_of), LOOKUP_TIMEOUT_S
                )
                return name, str(node)
            except ValueError:  # no such actor (any more)
                return name, None
            except Exception:  # busy or restarting: ask again
                await asyncio.sleep(POLL_S)
        return name, None

    found = await asyncio.gather(*(where(name) for name in names))
    return {name: node for name, node in found if node is not None}


async def retire_media_shard(
    rooms: RoomRouter, media: MediaRouter, name: str, deadline: float, reason: str
) -> int:
    """No new rooms for media shard `name`; tell each of its rooms to reconnect (`reason`
    in the event); wait, until the monotonic `deadline`, for its sessions to leave; then
    drain it (recordings flush) and stop it. Returns the rooms told."""
    await media.directory.remove(name)
    assigned = {text(k): text(v) for k, v in (await media.redis.hgetall(keys.MEDIA_ROOMS)).items()}
    told = sorted(room for room, shard in assigned.items() if shard == name)
    for room in told:
        # Forget the assignment first: the clients' new offers go to a live shard.
        await media.redis.hdel(keys.MEDIA_ROOMS, room)
        event = {"type": RECONNECT, "plane": "media", "reason": reason, "retry_after": 1}
        await rooms.append(room, event)
    while time.monotonic() < deadline:
        load = (await media.loads([name])).get(name)
        if load is None or load.get("sessions", 0) == 0:
            break
        await asyncio.sleep(POLL_S)
    with contextlib.suppress(Exception):
        handle = await media.handle(name)
        await asyncio.wait_for(actor_call(handle.drain), max(deadline - time.monotonic(), 1))
        ray.kill(handle, no_restart=True)
    await media.redis.delete(keys.media_load_key(name))
    return len(told)


class Drainer:
    def __init__(
        self,
        settings: Settings,
        rooms: RoomRouter,
        media: MediaRouter,
        progress: Progress | None = None,
    ) -> None:
        self.settings = settings
        self.rooms = rooms
        self.media = media
        self.progress = progress

    async def drain(self, node: dict[str, Any], timeout_s: float) -> DrainReport:
        node_id = node["NodeID"]
        report = DrainReport(node_id, node["NodeManagerAddress"])
        deadline = time.monotonic() + timeout_s
        stop = asyncio.Event()
        following = None
        if self.progress is not None:
            self.progress.render = lambda: progress_line(report, deadline - time.monotonic())
            following = asyncio.ensure_future(follow(self.progress, stop))
        try:
            return await self._drain(node_id, report, deadline, timeout_s)
        finally:
            stop.set()
            if following is not None:
                await following

    async def _drain(
        self, node_id: str, report: DrainReport, deadline: float, timeout_s: float
    ) -> DrainReport:
        await asyncio.to_thread(mark_draining, node_id, timeout_s)
        on_node = [n for n, where in (await placements(self.settings.ray_namespace)).items()
                   if where == node_id]  # fmt: skip
        room_shards = set(await self.rooms.directory.members())
        media_shards = set(await self.media.directory.members()) | {
            n for n in on_node if n.startswith("media-shard-")
        }
        for name in sorted(room_shards.intersection(on_node)):
            await self._move_room_shard(name, report)
        for name in sorted(media_shards.intersection(on_node)):
            await self._replace_media_shard(name, report)
            report.media_rooms[name] = await self._leave_media(name, deadline)
        for name in sorted(set(on_node) - room_shards - media_shards):
            await self._restart_elsewhere(name)
            report.restarted.append(name)
        report.remaining = await self._wait_empty(node_id, deadline)
        return report

    async def _move_room_shard(self, name: str, report: DrainReport) -> None:
        members = await self.rooms.directory.members()
        if len(members) - 1 < self.settings.room_shards:
            replacement = self._free_name(members)
            await self._create_shard(replacement, members)
            await self.rooms.directory.add(replacement, {})
            report.replacements.append(replacement)
            members = await self.rooms.directory.members()
        handle = await self.rooms.handle(name)
        report.rooms_moved[name] = len(await handle.owned_rooms.remote())
        await shards._remove(self.rooms, name, members)

    @staticmethod
    def _free_name(members: list[str]) -> str:
        index = 0
        while shard_name(index) in members:
            index += 1
        return shard_name(index)

    async def _create_shard(self, name: str, members: list[str]) -> None:
        # The drained node takes nothing new (`placement.slots` leaves it out): the
        # node holding the fewest room shards among the others.
        await placement.start(
            RoomShard, name, self.settings.ray_namespace, (self.settings, name), "room_shard",
            members,
        )  # fmt: skip

    async def _replace_media_shard(self, name: str, report: DrainReport) -> None:
        """Start a media shard elsewhere first when fewer than `EXAMDAY_MEDIA_SHARDS` would
        remain: the cameras told to reconnect then have somewhere to go at once."""
        members = await self.media.directory.members()
        if len([m for m in members if m != name]) >= self.settings.media_shards:
            return
        index = 0
        while media_shard_name(index) in members:
            index += 1
        replacement = media_shard_name(index)
        await placement.start(
            MediaShard, replacement, self.settings.ray_namespace, (self.settings, replacement),
            "media", members,
        )  # fmt: skip
        await self.media.add_shard(replacement)
        report.replacements.append(replacement)

    async def _leave_media(self, name: str, deadline: float) -> int:
        return await retire_media_shard(self.rooms, self.media, name, deadline, "node_drain")

    async def _restart_elsewhere(self, name: str) -> None:
        # Our named actors restart (max_restarts=-1) and, the node draining, land elsewhere.
        with contextlib.suppress(ValueError):
            handle = await asyncio.to_thread(
                ray.get_actor, name, namespace=self.settings.ray_namespace
            )
            ray.kill(handle, no_restart=False)

    async def _wait_empty(self, node_id: str, deadline: float) -> list[str]:
        while True:
            left = sorted(n for n, where in (await placements(self.settings.ray_namespace)).items()
                          if where == node_id)  # fmt: skip
            if not left or time.monotonic() >= deadline:
                return left
            await asyncio.sleep(POLL_S)


def progress_line(report: DrainReport, left_s: float) -> str:
    emptied = len(report.rooms_moved) + len(report.media_rooms)
    return (
        f"rooms moved {sum(report.rooms_moved.values())}, rooms told to reconnect"
        f" {sum(report.media_rooms.values())}, shards emptied {emptied},"
        f" restarted {len(report.restarted)}; deadline in {clock_text(left_s)}"
    )


def render(report: DrainReport) -> str:
    lines = [f"node {report.node_id[:12]} ({report.ip})"]
    for name, count in report.rooms_moved.items():
        lines.append(f"  room shard {name}: {count} rooms handed over, shard stopped")
    for name in report.replacements:
        lines.append(f"  replacement shard {name} started elsewhere")
    for name, count in report.media_rooms.items():
        lines.append(f"  media shard {name}: {count} rooms told to reconnect, shard stopped")
    for name in report.restarted:
        lines.append(f"  {name}: restarted elsewhere")
    if report.empty:
        lines.append("node is empty: no examday actor left on it")
    else:
        lines.append("still on the node at the deadline: " + ", ".join(report.remaining))
    return "\n".join(lines)


async def drain_node(
    settings: Settings, node: str, timeout_s: float, progress: Progress | None = None
) -> DrainReport:
    found = await asyncio.to_thread(resolve_node, node)
    redis = redis_conn.connect(settings)
    try:
        drainer = Drainer(
            settings, RoomRouter(settings, redis), MediaRouter(settings, redis), progress
        )
        return await drainer.drain(found, timeout_s)
    finally:
        await redis.aclose()


def drain(settings: Settings, node: str, timeout_s: float, *, quiet: bool = False) -> int:
    raycluster.connect(settings)
    try:
        with Progress(f"examday cluster drain {node}", quiet=quiet) as progress:
            report = asyncio.run(drain_node(settings, node, timeout_s, progress))
    except (NotFound, Conflict, ConfigError) as exc:
        raise SystemExit(f"examday cluster drain: {exc}") from None
    print(render(report))
    return 0 if report.empty else 1
