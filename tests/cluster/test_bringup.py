"""`examday up` starts the shard controller: a whole platform comes up in its own state
directory, and its controller's decisions on both planes appear in that platform's Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from core import keys
from infra.settings import settings_to_env
from infra.settings.ops import OpsSettings
from infra.stack import isolated_settings

UP_TIMEOUT_S = 240


def test_examday_up_starts_the_shard_controller(tmp_path: Path) -> None:
    # A one-second loop, so that its first decision comes soon after start.
    settings = isolated_settings(tmp_path / "state", ops=OpsSettings(controller_interval_s=1))
    env = {**os.environ, **settings_to_env(settings)}
    examday = str(Path(sys.executable).parent / "examday")
    output = tmp_path / "up.log"
    with output.open("w") as out:
        up = subprocess.Popen(
            [examday, "up"], env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + UP_TIMEOUT_S
        history: list[Any] = []
        while len(history) < 2:
            assert up.poll() is None, output.read_text()
            assert time.monotonic() < deadline, f"no controller decision: {output.read_text()}"
            time.sleep(1)
            if (settings.state_dir / "stack.json").exists():
                client = redis.Redis.from_url(settings.redis_url)
                try:
                    history = client.lrange(keys.CONTROLLER_HISTORY, 0, -1)
                except redis.ConnectionError:
                    history = []
                finally:
                    client.close()
    finally:
        down = subprocess.run(
            [examday, "down"], env=env, capture_output=True, text=True, timeout=120
        )
        up.wait(60)
    assert down.returncode == 0, down.stderr
    first = {json.loads(entry)["plane"]: json.loads(entry) for entry in history[-2:]}
    # The platform's default shards are within the default bounds: both planes hold.
    assert (first["rooms"]["action"], first["rooms"]["reason"]) == ("hold", "in_band")
    assert (first["media"]["action"], first["media"]["reason"]) == ("hold", "media_in_band")
    assert "controller running: every 1s" in output.read_text()
