"""`examday cluster status` shows the live cluster: nodes, room shards with their rooms,
media shards, verifier replicas."""

from __future__ import annotations

import httpx
import ray
from fastapi import FastAPI

from cluster import cli, status
from infra.settings import Settings
from tests.support.factories import joined_candidate, new_exam


async def test_status_shows_nodes_shards_and_rooms(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    world = await new_exam(client, app.state.runtime, {"s1": ["5512001"], "s2": ["5512002"]})
    for number in ("5512001", "5512002"):
        await joined_candidate(client, world.exam_id, number)
    nodes, sample, shard_controller = await status.collect(settings)
    alive = [n["NodeID"] for n in ray.nodes() if n["Alive"]]  # type: ignore[no-untyped-call]
    assert [n["id"] for n in nodes] == alive
    assert sample.rooms[(world.exam_id, "s1")] == {"joined": 1}
    assert sample.rooms[(world.exam_id, "s2")] == {"joined": 1}
    screen = status.render(nodes, sample, shard_controller)
    assert f"nodes ({len(nodes)})" in screen
    for name in await app.state.runtime.rooms.directory.members():
        assert name in screen
    assert "verifier replicas:" in screen
    # The session's platform was not started by `examday up`: no controller of that name.
    assert shard_controller["state"] == "absent"
    assert "shard controller: absent" in screen
    assert sample.errors == []


def test_validate_command_passes_on_the_repository() -> None:
    assert cli.main(["cluster", "validate"]) == 0
