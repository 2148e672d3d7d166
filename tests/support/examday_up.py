"""A real `examday up` in a subprocess with its own state directory: start it, wait until
its gateway is ready, stop it with `examday down`, read its manifest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.settings import Settings, settings_to_env

EXAMDAY = str(Path(sys.executable).parent / "examday")
UP_TIMEOUT_S = 240.0


@dataclass
class Up:
    settings: Settings
    process: subprocess.Popen[bytes]
    output: Path

    @property
    def env(self) -> dict[str, str]:
        return examday_env(self.settings)

    def manifest(self) -> dict[str, Any]:
        manifest: dict[str, Any] = json.loads((self.settings.state_dir / "stack.json").read_text())
        return manifest

    def log(self) -> str:
        return self.output.read_text(errors="replace")


def examday_env(settings: Settings, **extra: str) -> dict[str, str]:
    return {**os.environ, **settings_to_env(settings), **extra}


def readyz(settings: Settings) -> tuple[int, dict[str, Any]]:
    """The gateway's /readyz: status code and body (0 and {} when nothing answers)."""
    try:
        with urllib.request.urlopen(f"{settings.gateway_url}/readyz", timeout=10) as response:  # noqa: S310
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read())
    except OSError:
        return 0, {}


def start(settings: Settings, output: Path, **extra_env: str) -> Up:
    """`examday up`, returned once its manifest is written and its gateway is ready."""
    with output.open("ab") as out:
        process = subprocess.Popen(
            [EXAMDAY, "up"],
            env=examday_env(settings, **extra_env),
            cwd=settings.state_dir.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    up = Up(settings, process, output)
    deadline = time.monotonic() + UP_TIMEOUT_S
    manifest = settings.state_dir / "stack.json"
    while not manifest.exists() or readyz(settings)[0] != 200:
        assert process.poll() is None, up.log()
        assert time.monotonic() < deadline, f"not ready within {UP_TIMEOUT_S:.0f}s:\n{up.log()}"
        time.sleep(0.5)
    return up


def down(up: Up) -> None:
    done = subprocess.run(
        [EXAMDAY, "down"], env=up.env, capture_output=True, text=True, timeout=120
    )
    up.process.wait(60)
    assert done.returncode == 0, done.stdout + done.stderr


def run(settings: Settings, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXAMDAY, *args],
        env=examday_env(settings, **extra_env),
        capture_output=True,
        text=True,
        timeout=120,
    )
