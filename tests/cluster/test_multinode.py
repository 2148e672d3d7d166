"""`examday up --nodes 3` (Ray nodes on 127.0.0.2, .3 and .4): the shard controller spreads
the room and media shards over the nodes, and `examday cluster drain` of the node holding
the media shard, under a live fleet (30 candidates, 2 cameras), ends with the node empty,
no failed step and every camera published again.

Its own platform, driven only through the `examday` command (the test process stays off
this Ray cluster). About 3 minutes on 2 cores. The exam-day rehearsal is the same with
`examday loadtest --candidates 300 --media 8` (docs/operations.md, "Drain")."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from core import keys
from infra.settings import Settings, settings_to_env
from infra.settings.ops import OpsSettings
from infra.stack import isolated_settings

UP_TIMEOUT_S = 240
CANDIDATES, CAMERAS = 30, 2
PASSWORD = "multinode-organiser-password"
# Each named actor of the namespace -> the address of the node it runs on.
PLACEMENTS = """
import asyncio, json
import ray
from cluster import drain
from infra import raycluster
from infra.settings import Settings
settings = Settings()
raycluster.connect(settings)
placed = asyncio.run(drain.placements(settings.ray_namespace))
ips = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
print(json.dumps({name: ips.get(node, node) for name, node in placed.items()}))
"""


def _examday(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    examday = str(Path(sys.executable).parent / "examday")
    done = subprocess.run(
        [examday, *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"examday {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def _placements(env: dict[str, str]) -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", PLACEMENTS], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    placed: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return placed


def _wait_for_sessions(settings: Settings, shard: str, count: int, fleet: Any) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        deadline = time.monotonic() + 120
        while True:
            raw = client.get(keys.media_load_key(shard))
            if raw is not None and json.loads(raw).get("sessions", 0) >= count:
                return
            assert fleet.poll() is None, "the fleet ended before its cameras were up"
            assert time.monotonic() < deadline, f"{shard}: no {count} sessions"
            time.sleep(0.5)
    finally:
        client.close()


def test_three_nodes_spread_the_shards_and_a_drain_under_load_loses_no_camera(
    tmp_path: Path,
) -> None:
    settings = isolated_settings(tmp_path / "state", ops=OpsSettings(controller_interval_s=5))
    env = {**os.environ, **settings_to_env(settings)}
    examday = str(Path(sys.executable).parent / "examday")
    output = tmp_path / "up.log"
    with output.open("w") as out:
        up = subprocess.Popen(
            [examday, "up", "--nodes", "3"],
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

        placed = _placements(env)
        rooms = {ip for name, ip in placed.items() if re.fullmatch(r"room-shard-\d+", name)}
        media = {ip for name, ip in placed.items() if re.fullmatch(r"media-shard-\d+", name)}
        assert len(rooms) == settings.room_shards == 2, placed  # one room shard per node
        assert len(rooms | media) >= 2, placed
        assert "127.0.0.2" not in rooms | media, placed  # workers before the head
        target = placed["media-shard-0"]

        _examday({**env, "EXAMDAY_NEW_PASSWORD": PASSWORD}, "staff", "add", "--username", "org")
        fleet_log = (tmp_path / "fleet.log").open("w")
        report = tmp_path / "report"
        fleet = subprocess.Popen(
            [
                examday, "loadtest", "--candidates", str(CANDIDATES), "--media", str(CAMERAS),
                "--proctors", "1", "--ramp", "5", "--duration", "60",
                "--target", settings.gateway_url, "--organiser", "org", "--report", str(report),
            ],
            env={**env, "EXAMDAY_LOADTEST_PASSWORD": PASSWORD},
            stdout=fleet_log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            _wait_for_sessions(settings, "media-shard-0", CAMERAS, fleet)
            drained = _examday(env, "cluster", "drain", target, "--timeout", "20")
            assert fleet.wait(180) == 0, (tmp_path / "fleet.log").read_text()
        finally:
            if fleet.poll() is None:
                fleet.kill()
            fleet_log.close()
        after = _placements(env)
    finally:
        down = subprocess.run(
            [examday, "down"], env=env, capture_output=True, text=True, timeout=120
        )
        up.wait(60)
    assert down.returncode == 0, down.stderr
    assert "media shard media-shard-0: 1 rooms told to reconnect" in drained, drained
    assert "node is empty" in drained, drained
    assert target not in after.values(), after
    summary = json.loads((report / "summary.json").read_text())
    failed = {name: s["errors"] for name, s in summary["steps"].items() if s["errors"]}
    assert failed == {}, summary["steps"]
    assert summary["steps"]["join"]["count"] == CANDIDATES
    # Every camera of the drained shard was published again, on the replacement shard:
    # told by the server's `reconnect` (on the candidate's own channel) before the shard
    # stopped, or, heard too late, after its connection was cut.
    told = summary["steps"].get("server_reconnect", {"count": 0})["count"]
    assert told + sum(summary["media_connections_lost"].values()) == CAMERAS
    assert told >= 1  # the reconnect does reach candidates
    assert summary["steps"]["whip_republish"]["count"] == CAMERAS
