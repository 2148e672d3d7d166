"""The shard controller's decisions: pure functions of the loads, the bounds and time.

One rule for every plane it scales: room shards by the rooms each holds, media
shards by the WebRTC sessions each serves, ingest shards by the client log
records acknowledged and not yet flushed (their stream's backlog). Grow above
the high mark, shrink below the low one (only if the shards left stay under the
high mark, so that a shrink never causes the next grow), never outside
min..max, and never twice within the cool-down. Reasons of the media and ingest
planes start with `media_` and `ingest_`, so that the metric
`examday_controller_decisions{action, reason}` tells the planes apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.settings.ops import OpsSettings

ROOMS = "rooms"
MEDIA = "media"
INGEST = "ingest"
# What a plane's load counts, as named in its reasons.
UNITS = {ROOMS: "rooms", MEDIA: "sessions", INGEST: "backlog"}


@dataclass(frozen=True)
class Bounds:
    min_shards: int
    max_shards: int
    high: float  # load per shard above which the plane grows
    low: float  # load per shard below which it shrinks
    cooldown_s: float
    prefix: str = ""  # of the reasons


def node_floor(floor: int, per_node: int, nodes: int) -> int:
    """The floor of a plane on a cluster of `nodes` nodes offering its resource: it grows
    and shrinks with the cluster when `per_node` is set (0: the node count is ignored)."""
    return max(floor, per_node * nodes)


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


def ingest_bounds(ops: OpsSettings, floor: int = 1) -> Bounds:
    """`floor`: `EXAMDAY_INGEST__SHARDS`, as for the room shards."""
    return Bounds(
        *_floor(ops.controller_ingest_min_shards, ops.controller_ingest_max_shards, floor),
        ops.controller_ingest_backlog_high,
        ops.controller_ingest_backlog_low,
        ops.controller_cooldown_s,
        prefix="ingest_",
    )


@dataclass(frozen=True)
class Decision:
    action: str  # grow | shrink | hold
    reason: str
    shards: int
    load: int  # in the plane's unit (`UNITS`), all shards together
    plane: str = ROOMS

    @property
    def changes(self) -> bool:
        return self.action != "hold"


def decide_load(
    loads: list[int], bounds: Bounds, since_change_s: float, plane: str = ROOMS
) -> Decision:
    """What to do given each shard's load and the time since the plane last changed."""
    count, total = len(loads), sum(loads)
    unit = UNITS[plane]

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


def decide_ingest(backlogs: list[int], ops: OpsSettings, since_change_s: float) -> Decision:
    """The ingest shards' decision, by the backlog of each one's stream."""
    return decide_load(backlogs, ingest_bounds(ops), since_change_s, INGEST)
