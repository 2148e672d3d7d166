"""The crash gate: is a rolling-out version crashing more than the one it replaces?

Crash rates come from the live ingest aggregates (crashed sessions / sessions
of an app version on a platform, all device models). A verdict needs enough
sessions of the new version; the previous version's rate is taken as it is.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from actors.updates.rollout import Rollout
from core import aggregates


async def verdict(redis: Redis, rollout: Rollout) -> dict[str, Any] | None:
    """Why the rollout must halt, or None. Only versions and rates: no personal data."""
    if rollout.state not in ("active", "paused") or not rollout.previous:
        return None
    new = await aggregates.version_health(redis, rollout.platform, rollout.version)
    old = await aggregates.version_health(redis, rollout.platform, rollout.previous)
    gate = rollout.gate
    if new.sessions < gate.min_sessions or new.crash_rate <= old.crash_rate + gate.margin:
        return None
    return {
        "platform": rollout.platform,
        "channel": rollout.channel,
        "version": rollout.version,
        "previous": rollout.previous,
        "crash_rate": round(new.crash_rate, 4),
        "previous_crash_rate": round(old.crash_rate, 4),
        "sessions": new.sessions,
        "margin": gate.margin,
    }
