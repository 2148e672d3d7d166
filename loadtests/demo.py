"""The simulated exam that `examday up --demo` runs once the platform is up."""

from __future__ import annotations

import json
import threading
import urllib.request

from infra.settings import Settings


def run_demo(settings: Settings, stop: threading.Event) -> None:
    with urllib.request.urlopen(f"{settings.gateway_url}/readyz", timeout=10) as response:  # noqa: S310
        print("demo: readiness", json.loads(response.read())["status"])
