"""`examday down` after a supervisor died without a word: it ends the services the
manifest names, and nothing that merely took one of their pids since."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from cluster import bringup
from infra.processes import ManagedProcess, pid_alive
from infra.stack import MANIFEST_NAME, isolated_settings, start_ticks

# A process whose command line reads like a service's ("redis-server", "weed").
SLEEP = "import time; time.sleep(120)"


def _service(name: str, word: str, tmp_path: Path) -> ManagedProcess:
    process = ManagedProcess(name, [sys.executable, "-c", SLEEP, word], tmp_path / f"{name}.log")
    process.start()
    return process


def test_down_ends_the_named_services_and_spares_a_reused_pid(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path / "state")
    settings.state_dir.mkdir(parents=True)
    survivor = _service("redis", "redis-server", tmp_path)
    # Another stack's SeaweedFS on a pid that the manifest names for a SeaweedFS that
    # started earlier and has ended (pid reuse, as after a wrap of a container's 32768).
    stranger = _service("seaweedfs", "weed", tmp_path)
    try:
        assert survivor.pid is not None
        assert stranger.pid is not None
        stranger_start = start_ticks(stranger.pid)
        assert stranger_start is not None
        manifest = {
            "supervisor_pid": _dead_pid(),
            "state_dir": str(settings.state_dir),
            "services": {"redis": survivor.pid, "seaweedfs": stranger.pid},
            "starts": {"redis": start_ticks(survivor.pid), "seaweedfs": stranger_start - 500},
        }
        (settings.state_dir / MANIFEST_NAME).write_text(json.dumps(manifest))
        assert bringup.down(settings) == 0
        deadline = time.monotonic() + 10
        while survivor.running and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not survivor.running
        assert stranger.running
        assert pid_alive(stranger.pid)
        assert not (settings.state_dir / MANIFEST_NAME).exists()
    finally:
        survivor.stop()
        stranger.stop()


def _dead_pid() -> int:
    """The pid of a process that has ended (its supervisor, SIGKILLed)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid
