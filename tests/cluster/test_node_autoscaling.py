"""Node autoscaling on one machine: `examday up --autoscale` runs Ray's autoscaler on the
head with media nodes as on KubeRay (the `media` resource, one unit per UDP port of the
region's span: 4), one node at least (127.0.0.3), two at most (127.0.0.3, .4).

The shard controller asked for five media shards fills the first node's four units, and the
fifth, having no node with a free unit, waits: the autoscaler adds 127.0.0.4 and the shard
runs there. Asked for four again, the controller retires that shard, and the idle node goes
after its idle timeout (10 s here; 600 s in the KubeRay manifests).

Its own platform, driven only through the `examday` command and driver scripts (the test
process stays off this Ray cluster). About 2 minutes on 2 cores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from infra.settings import settings_to_env
from infra.settings.ops import OpsSettings
from infra.stack import isolated_settings

UP_TIMEOUT_S = 240
FIRST, SECOND = "127.0.0.3", "127.0.0.4"
# Steps a controller with the media plane held at argv[1] shards until the directory has
# them, then waits until each runs somewhere; prints its decisions and shard -> node address.
SCALE_MEDIA = """
import asyncio, json, sys, time
import ray
from actors.media.client import MediaRouter
from cluster import controller, placement
from infra import raycluster
from infra import redis as redis_conn
from infra.settings import Settings
from infra.telemetry import actor_call

target = int(sys.argv[1])
settings = Settings()
ops = settings.ops.model_copy(update={
    "controller_media_min_shards": target, "controller_media_max_shards": target,
    "controller_cooldown_s": 0, "controller_media_drain_s": 1,
})
raycluster.connect(settings)

async def main():
    media = MediaRouter(settings, redis_conn.connect(settings))
    handle = await asyncio.to_thread(
        controller.get_or_create, settings.model_copy(update={"ops": ops}), f"scale-{target}"
    )
    decisions = []
    try:
        for _ in range(8):
            media.directory.forget_cache()  # the controller changed it on its own connection
            if len(await media.directory.members()) == target:
                break
            [d] = [d for d in await actor_call(handle.step) if d["plane"] == "media"]
            decisions.append(f"{d['action']}:{d['reason']}")
    finally:
        ray.kill(handle)
    media.directory.forget_cache()
    names = sorted(await media.directory.members())
    began, placed = time.monotonic(), {}
    while len(placed) < len(names) and time.monotonic() - began < 180:
        placed = await placement.nodes_of(names, settings.ray_namespace)
    ips = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
    print("RESULT", json.dumps({
        "decisions": decisions,
        "placed": {name: ips.get(node, node) for name, node in placed.items()},
        "waited_s": round(time.monotonic() - began, 1),
    }))

asyncio.run(main())
"""
# Waits (at most argv[2] seconds) until no live node has address argv[1]; prints the
# seconds waited and the live nodes' addresses.
NODE_GONE = """
import json, sys, time
import ray
from infra import raycluster
from infra.settings import Settings
raycluster.connect(Settings())
began = time.monotonic()
while True:
    alive = sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"])
    if sys.argv[1] not in alive or time.monotonic() - began > float(sys.argv[2]):
        break
    time.sleep(1)
print("RESULT", json.dumps({"waited_s": round(time.monotonic() - began, 1), "alive": alive}))
"""


def _run(env: dict[str, str], script: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # Ray's autoscaler writes to the driver's standard output as well.
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, done.stdout[-3000:]
    result: dict[str, Any] = json.loads(lines[0].removeprefix("RESULT "))
    return result


def test_the_autoscaler_adds_a_media_node_for_a_waiting_shard_and_removes_it_idle(
    tmp_path: Path,
) -> None:
    # The controller only steps when told: each step is this test's.
    ops = OpsSettings(controller_autostart=False)
    settings = isolated_settings(tmp_path / "state", ops=ops)
    env = {**os.environ, **settings_to_env(settings)}
    examday = str(Path(sys.executable).parent / "examday")
    output = tmp_path / "up.log"
    with output.open("w") as out:
        up = subprocess.Popen(
            [examday, "up", "--autoscale", "--idle-timeout", "10"],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + UP_TIMEOUT_S
        while not (settings.state_dir / "stack.json").exists():
            assert up.poll() is None, output.read_text()
            assert time.monotonic() < deadline, f"not up: {output.read_text()}"
            time.sleep(1)
        grown = _run(env, SCALE_MEDIA, "5")
        shrunk = _run(env, SCALE_MEDIA, "4")
        gone = _run(env, NODE_GONE, SECOND, "90")
    finally:
        down = subprocess.run(
            [examday, "down"], env=env, capture_output=True, text=True, timeout=120
        )
        up.wait(60)
    assert down.returncode == 0, down.stderr
    config = json.loads((settings.state_dir / "autoscaling.json").read_text())
    assert config["available_node_types"]["media"]["resources"]["media"] == 4
    assert "media" not in config["available_node_types"]["ray.head.default"]["resources"]
    # Four shards fill the first media node; the fifth ran once the autoscaler added one.
    assert grown["decisions"] == ["grow:media_below_min_shards"] * 4, grown
    placed = grown["placed"]
    assert sorted(placed) == [f"media-shard-{i}" for i in range(5)], grown
    assert sorted(placed.values()) == [FIRST] * 4 + [SECOND], grown
    assert placed["media-shard-4"] == SECOND, grown
    # Back to four: the shard on the second node is retired, and the idle node goes.
    assert shrunk["decisions"] == ["shrink:media_above_max_shards"], shrunk
    assert "media-shard-4" not in shrunk["placed"], shrunk
    assert SECOND not in gone["alive"], gone
    assert FIRST in gone["alive"], gone
    print(
        f"node added and shard running {grown['waited_s']} s after the grow;"
        f" idle node gone {gone['waited_s']} s after the retirement"
    )
