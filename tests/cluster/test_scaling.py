"""The controller's decisions: within limits and cool-downs, for room and media shards."""

from __future__ import annotations

import pytest

from cluster.scaling import (
    decide,
    decide_ingest,
    decide_media,
    ingest_bounds,
    media_bounds,
    node_floor,
    room_bounds,
)
from infra.settings.ops import OpsSettings

OPS = OpsSettings(
    controller_min_shards=2,
    controller_max_shards=4,
    controller_rooms_high=100,
    controller_rooms_low=20,
    controller_cooldown_s=60,
    controller_media_min_shards=1,
    controller_media_max_shards=3,
    controller_media_sessions_high=200,
    controller_media_sessions_low=50,
)


@pytest.mark.parametrize(
    ("loads", "since", "action", "reason"),
    [
        ([5], 0, "grow", "below_min_shards"),
        ([1, 1, 1, 1, 1], 0, "shrink", "above_max_shards"),
        ([150, 150], 10, "hold", "cooldown"),
        ([150, 150], 600, "grow", "rooms_per_shard_high"),
        ([150, 150, 150, 150], 600, "hold", "at_max_shards"),
        ([10, 10, 10], 600, "shrink", "rooms_per_shard_low"),
        ([10, 10], 600, "hold", "in_band"),
        ([60, 60, 60], 600, "hold", "in_band"),
    ],
)
def test_room_decisions(loads: list[int], since: float, action: str, reason: str) -> None:
    decision = decide(loads, OPS, since)
    assert (decision.action, decision.reason) == (action, reason)
    assert (decision.plane, decision.load, decision.shards) == ("rooms", sum(loads), len(loads))


@pytest.mark.parametrize(
    ("sessions", "since", "action", "reason"),
    [
        ([], 600, "grow", "media_below_min_shards"),
        ([0, 0, 0, 0], 0, "shrink", "media_above_max_shards"),
        ([250], 10, "hold", "media_cooldown"),
        ([250], 600, "grow", "media_sessions_per_shard_high"),
        ([250, 250, 250], 600, "hold", "media_at_max_shards"),
        ([20, 20], 600, "shrink", "media_sessions_per_shard_low"),
        ([20], 600, "hold", "media_in_band"),
    ],
)
def test_media_decisions(sessions: list[int], since: float, action: str, reason: str) -> None:
    decision = decide_media(sessions, OPS, since)
    assert (decision.action, decision.reason) == (action, reason)
    assert (decision.plane, decision.load) == ("media", sum(sessions))


@pytest.mark.parametrize(
    ("backlogs", "since", "action", "reason"),
    [
        ([], 0, "grow", "ingest_below_min_shards"),
        ([30_000, 25_000], 600, "grow", "ingest_backlog_per_shard_high"),
        ([30_000, 25_000], 10, "hold", "ingest_cooldown"),
        ([100, 0, 50], 600, "shrink", "ingest_backlog_per_shard_low"),
        ([5_000, 4_000], 600, "hold", "ingest_in_band"),
    ],
)
def test_ingest_decisions(backlogs: list[int], since: float, action: str, reason: str) -> None:
    decision = decide_ingest(backlogs, OPS, since)
    assert (decision.action, decision.reason) == (action, reason)
    assert (decision.plane, decision.load) == ("ingest", sum(backlogs))


def test_shrinking_never_pushes_the_rest_above_the_high_mark() -> None:
    ops = OPS.model_copy(update={"controller_rooms_low": 99})
    # 3 shards at 90 rooms are under the low mark, but 2 would hold 135 each.
    assert decide([90, 90, 90], ops, 600).reason == "in_band"
    media = OPS.model_copy(update={"controller_media_sessions_low": 150})
    # 2 media shards at 140 sessions are under the low mark; 1 would serve 280.
    assert decide_media([140, 140], media, 600).reason == "media_in_band"


def test_the_shards_gateways_ensure_are_the_floor() -> None:
    # EXAMDAY_ROOM_SHARDS=3 above a minimum of 2: never fewer than 3 (a gateway start
    # would put one back); a maximum under that floor is raised to it.
    assert (room_bounds(OPS, 3).min_shards, room_bounds(OPS, 3).max_shards) == (3, 4)
    assert (media_bounds(OPS, 5).min_shards, media_bounds(OPS, 5).max_shards) == (5, 5)
    assert room_bounds(OPS, 1).min_shards == 2
    assert ingest_bounds(OPS, 2).min_shards == 2


def test_the_node_count_raises_the_floor_when_asked() -> None:
    assert node_floor(2, 0, 10) == 2  # off: the node count is ignored
    assert node_floor(2, 1, 3) == 3  # one shard per node on 3 nodes
    assert node_floor(4, 1, 3) == 4  # never below what the gateways ensure
    assert room_bounds(OPS, node_floor(2, 2, 3)).min_shards == 6


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="controller_min_shards"):
        OpsSettings(controller_min_shards=5, controller_max_shards=2)
    with pytest.raises(ValueError, match="controller_media_sessions_low"):
        OpsSettings(controller_media_sessions_low=300, controller_media_sessions_high=200)
