"""Reading the real log output: Ray workers' stderr files and the gateway's log file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from infra import services
from infra.settings import Settings


def ray_log_dir(settings: Settings) -> Path:
    """The logs of the session's head node (workers write their stderr here)."""
    return services.ray_temp_dir(settings) / "session_latest" / "logs"


def worker_err_files(settings: Settings, pid: int | None = None) -> list[Path]:
    pattern = f"worker-*-{pid}.err" if pid is not None else "worker-*"
    return sorted(ray_log_dir(settings).glob(pattern))


def json_lines(path: Path) -> list[dict[str, Any]]:
    """The lines of a file that are JSON objects (Ray and uvicorn may add others)."""
    found = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found
