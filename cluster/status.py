"""`examday cluster status`: nodes, room shards and rooms, media shards and streams,
verifier replicas, the shard controller and its latest decisions, on one screen.

It only looks: no actor is created (a missing verifier pool shows as absent), unlike
the gateway's clients that start what they need on first use.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import ray

from actors.media.client import MediaRouter
from actors.rooms.client import RoomRouter
from api.metrics import ClusterSample, ClusterSampler
from infra import raycluster
from infra import redis as redis_conn
from infra.redis_persistence import Persistence, persistence
from infra.settings import Settings
from infra.telemetry import actor_call


async def verifier_status(settings: Settings) -> dict[str, Any]:
    """The verifier pool's status if the pool exists; empty if it does not."""
    try:
        pool = await asyncio.to_thread(
            ray.get_actor, settings.verifier.pool_name, namespace=settings.ray_namespace
        )
    except ValueError:
        return {}
    status: dict[str, Any] = await actor_call(pool.status)
    return status


def live_nodes() -> list[dict[str, Any]]:
    """`ray.nodes()`, the ones alive, reduced to what an operator reads (blocking)."""
    nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
    return [
        {
            "id": node["NodeID"],
            "ip": node["NodeManagerAddress"],
            "resources": node.get("Resources", {}),
        }
        for node in nodes
        if node.get("Alive")
    ]


async def controller_status(
    settings: Settings, redis: Any, name: str | None = None
) -> dict[str, Any]:
    """Whether the shard controller exists and loops, and its latest decision per plane."""
    from cluster import controller

    try:
        handle = await asyncio.to_thread(
            ray.get_actor, name or controller.CONTROLLER_NAME, namespace=settings.ray_namespace
        )
        state = "running" if await actor_call(handle.running) else "idle"
    except ValueError:
        state = "absent"
    latest: dict[str, dict[str, Any]] = {}
    for entry in await controller.history(redis, limit=20):
        latest.setdefault(entry.get("plane", "rooms"), entry)
    return {"state": state, "latest": latest}


async def collect(
    settings: Settings,
) -> tuple[list[dict[str, Any]], ClusterSample, dict[str, Any]]:
    redis = redis_conn.connect(settings)
    try:
        sampler = ClusterSampler(
            ops=settings.ops,
            redis=redis,
            rooms=RoomRouter(settings, redis),
            media=MediaRouter(settings, redis),
            verifier=lambda: verifier_status(settings),
            ingest=None,
            regions=sorted(settings.regions),
        )
        nodes, sample, shard_controller = await asyncio.gather(
            asyncio.to_thread(live_nodes), sampler.sample(), controller_status(settings, redis)
        )
    finally:
        await redis.aclose()
    return nodes, sample, shard_controller


def render(
    nodes: list[dict[str, Any]],
    sample: ClusterSample,
    shard_controller: dict[str, Any] | None = None,
) -> str:
    lines = [f"nodes ({len(nodes)})"]
    for node in nodes:
        res = node["resources"]
        custom = ",".join(k for k in ("room_shard", "media", "face", "ingest") if k in res)
        lines.append(
            f"  {node['id'][:12]}  {node['ip']:<15} cpu {res.get('CPU', 0):>5g}"
            f"  gpu {res.get('GPU', 0):>3g}  {custom}"
        )
    lines.append(f"room shards ({len(sample.room_shards)})")
    for name, stats in sorted(sample.room_shards.items()):
        lines.append(
            f"  {name:<20} node {str(stats.get('node', ''))[:12]}  rooms {stats['rooms']:>5}"
            f"  joined {stats['candidates_joined']:>6}  events {stats['events_appended']:>8}"
        )
    joined = sum(states.get("joined", 0) for states in sample.rooms.values())
    exams = {exam for exam, _ in sample.rooms}
    lines.append(f"rooms {len(sample.rooms)} in {len(exams)} exams, {joined} candidates joined")
    lines.append(f"media shards ({len(sample.media)} reporting)")
    for name, load in sorted(sample.media.items()):
        state = "draining" if load.get("closing") else "live"
        lines.append(
            f"  {name:<20} {state:<8} sessions {load.get('sessions', 0):>4}"
            f"/{load.get('max_sessions', 0)}  streams {load.get('streams', 0):>4}"
            f"  {load.get('bitrate_bps', 0) / 1e6:7.2f} Mbit/s  cpu {load.get('cpu_percent', 0)}%"
        )
    verifier = sample.verifier
    if not verifier:
        lines.append("verifier pool: absent")
    else:
        lines.append(
            f"verifier replicas: {len(verifier.get('replicas', []))} ready,"
            f" {len(verifier.get('starting', []))} starting"
            f" (min {verifier.get('min')}, max {verifier.get('max')})"
        )
        for name, load in sorted((verifier.get("loads") or {}).items()):
            lines.append(
                f"  {name:<28} queue {load.get('held', 0):>4}  frames {load.get('frames', 0):>7}"
                f"  {1000 * load.get('seconds_per_frame', 0.0):6.1f} ms/frame"
            )
    if shard_controller is not None:
        lines.append(f"shard controller: {shard_controller['state']}")
        for plane, entry in sorted(shard_controller["latest"].items()):
            lines.append(
                f"  {plane:<6} {entry['action']} ({entry['reason']}) shards {entry['shards']}"
                f"  at {time.strftime('%H:%M:%S', time.localtime(entry['at']))}"
            )
    if sample.errors:
        lines.append("did not answer: " + ", ".join(sample.errors))
    return "\n".join(lines)


async def redis_persistence(settings: Settings) -> Persistence:
    redis = redis_conn.connect(settings)
    try:
        return await persistence(redis)
    finally:
        await redis.aclose()


def status(settings: Settings) -> int:
    raycluster.connect(settings)
    nodes, sample, shard_controller = asyncio.run(collect(settings))
    print(render(nodes, sample, shard_controller))
    kept = asyncio.run(redis_persistence(settings))
    print(f"redis persistence: {kept.verdict} ({kept.reason}): {kept.detail}")
    return 1 if sample.errors else 0
