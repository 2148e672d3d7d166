"""`examday up` supervises its embedded Redis and SeaweedFS: a kill -9 of either brings a new
one on the same port and data directory, with the data still there, and `examday down`
afterwards still stops everything (the supervisor resurrects nothing it ends)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import redis

from infra import services
from infra.processes import pid_alive
from infra.settings.ops import OpsSettings
from infra.stack import isolated_settings
from tests.support import examday_up

PASSWORD = "correct horse battery staple"
BACK_WITHIN_S = 60.0


def _staff_login(up: examday_up.Up, username: str) -> int:
    import httpx

    response = httpx.post(
        f"{up.settings.gateway_url}/v1/staff/sessions",
        json={"username": username, "password": PASSWORD},
        timeout=30,
    )
    return response.status_code


def _restarted(up: examday_up.Up, name: str, old_pid: int) -> int:
    """The new pid of service `name` once the supervisor has replaced `old_pid`."""
    deadline = time.monotonic() + BACK_WITHIN_S
    while True:
        assert up.process.poll() is None, up.log()
        pid = int(up.manifest()["services"][name])
        if pid != old_pid and pid_alive(pid):
            return pid
        assert time.monotonic() < deadline, f"{name} not restarted:\n{up.log()}"
        time.sleep(0.2)


def test_killed_redis_seaweedfs_and_turn_come_back_with_their_data(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path / "state", ops=OpsSettings(controller_autostart=False))
    # fsync always: every acknowledged write is on disk before a kill -9 can land.
    up = examday_up.start(settings, tmp_path / "up.log", EXAMDAY_REDIS_FSYNC="always")
    family: list[int] = []
    try:
        added = examday_up.run(
            settings, "staff", "add", "--username", "org-kept", EXAMDAY_NEW_PASSWORD=PASSWORD
        )
        assert added.returncode == 0, added.stdout + added.stderr

        redis_pid = int(up.manifest()["services"]["redis"])
        os.kill(redis_pid, signal.SIGKILL)
        new_redis = _restarted(up, "redis", redis_pid)
        deadline = time.monotonic() + BACK_WITHIN_S
        client = redis.Redis.from_url(settings.redis_url)
        try:
            while True:
                try:
                    if client.ping():
                        break
                except redis.ConnectionError:
                    pass
                assert time.monotonic() < deadline, up.log()
                time.sleep(0.2)
            assert client.config_get("appendonly") == {"appendonly": "yes"}
            assert client.config_get("appendfsync") == {"appendfsync": "always"}
        finally:
            client.close()
        # The account written before the kill is still there, read through the gateway.
        deadline = time.monotonic() + BACK_WITHIN_S
        while _staff_login(up, "org-kept") != 201:
            assert time.monotonic() < deadline, up.log()
            time.sleep(0.5)

        weed_pid = int(up.manifest()["services"]["seaweedfs"])
        os.kill(weed_pid, signal.SIGKILL)
        new_weed = _restarted(up, "seaweedfs", weed_pid)
        deadline = time.monotonic() + BACK_WITHIN_S
        while examday_up.readyz(settings)[0] != 200:
            assert time.monotonic() < deadline, f"not ready again: {examday_up.readyz(settings)}"
            time.sleep(0.5)
        assert services.seaweed_healthy(settings)

        # The TURN relay keeps no state, but nothing else would bring it back.
        turn_pid = int(up.manifest()["services"]["turn"])
        os.kill(turn_pid, signal.SIGKILL)
        _restarted(up, "turn", turn_pid)
        deadline = time.monotonic() + BACK_WITHIN_S
        while not services.turn_healthy(settings):
            assert time.monotonic() < deadline, up.log()
            time.sleep(0.2)
        log = up.log()
        assert f"examday: redis (pid {redis_pid}) exited with -9; restarting" in log
        assert f"examday: redis restarted, pid {new_redis}" in log
        assert f"examday: seaweedfs restarted, pid {new_weed}" in log
        family = [int(p) for p in up.manifest()["services"].values()]
    finally:
        examday_up.down(up)
    time.sleep(1)
    assert [pid for pid in family if pid_alive(pid)] == []
