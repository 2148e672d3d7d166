"""The shard controller's decisions: pure functions of the loads, the bounds and time.

One rule for every plane it scales: room shards by the rooms each holds, media
shards by the WebRTC sessions each serves. Grow above the high mark, shrink below
the low one (only if the shards left stay under the high mark, so that a shrink
never causes the next grow), never outside min..max, and never twice within the
cool-down. Reasons of the media plane start with `media_`, so that the metric
`examday_controller_decisions{action, reason}` tells the planes apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.ops_settings import OpsSettings

ROOMS = "rooms"
MEDIA = "media"


@dataclass(frozen=True)
class Bounds:
    min_shards: int
    max_shards: int
    high: float  # load per shard above which the plane grows
    low: float  # load per shard below which it shrinks
    cooldown_s: float
    prefix: str = ""  # of the reasons


def _floor(minimum: int, maximum: int, floor: int) -> tuple[int, int]:
    low = max(minimum, floor)
    return low, max(maximum, low)


def room_bounds(ops: OpsSettings, floor: int = 1) -> Bounds:
    """`floor`: the shards the gateways make sure exist (`EXAMDAY_ROOM_SHARDS`); going
    below it would have each gateway start put one back."""
    return Bounds(
        *_floor(ops.controller_min_shards, ops.controller_max_shards, floor),
        ops.controller_rooms_high,
        ops.controller_rooms_low,
        ops.controller_cooldown_s,
    )


def media_bounds(ops: OpsSettings, floor: int = 1) -> Bounds:
    """`floor`: `EXAMDAY_MEDIA_SHARDS`, as for the room shards."""
    return Bounds(
        *_floor(ops.controller_media_min_shards, ops.controller_media_max_shards, floor),
        ops.controller_media_sessions_high,
        ops.controller_media_sessions_low,
        ops.controller_cooldown_s,
        prefix="media_",
    )


@dataclass(frozen=True)
class Decision:
    action: str  # grow | shrink | hold
    reason: str
    shards: int
    load: int  # rooms (rooms plane) or sessions (media plane), all shards together
    plane: str = ROOMS

    @property
    def changes(self) -> bool:
        return self.action != "hold"


def decide_load(
    loads: list[int], bounds: Bounds, since_change_s: float, plane: str = ROOMS
) -> Decision:
    """What to do given each shard's load and the time since the plane last changed."""
    count, total = len(loads), sum(loads)
    unit = "rooms" if plane == ROOMS else "sessions"

    def decision(action: str, reason: str) -> Decision:
        return Decision(action, bounds.prefix + reason, count, total, plane)

    if count < bounds.min_shards:
        return decision("grow", "below_min_shards")
    if count > bounds.max_shards:
        return decision("shrink", "above_max_shards")
    if since_change_s < bounds.cooldown_s:
        return decision("hold", "cooldown")
    if total / count > bounds.high:
        if count >= bounds.max_shards:
            return decision("hold", "at_max_shards")
        return decision("grow", f"{unit}_per_shard_high")
    shrinkable = count > bounds.min_shards and total / count < bounds.low
    if shrinkable and total / (count - 1) < bounds.high:
        return decision("shrink", f"{unit}_per_shard_low")
    return decision("hold", "in_band")


def decide(loads: list[int], ops: OpsSettings, since_change_s: float) -> Decision:
    """The room shards' decision."""
    return decide_load(loads, room_bounds(ops), since_change_s, ROOMS)


def decide_media(sessions: list[int], ops: OpsSettings, since_change_s: float) -> Decision:
    """The media shards' decision, by the sessions each serves."""
    return decide_load(sessions, media_bounds(ops), since_change_s, MEDIA)
