"""The short simulated exam that `examday up --demo` runs once the platform is up.

An organiser account is made for it (its password printed once), then a small
fleet rehearses an exam: 30 candidates log in within 20 s, 4 of them publish a
camera that shows a real face (one switches to another person, which the face
monitor should flag), a proctor watches, and the report is written.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from pathlib import Path

from actors.accounts.staff import StaffRegistry
from core import keys
from infra import redis as redis_conn
from infra.settings import Settings
from loadtests import fleet
from loadtests.config import FleetConfig

DEMO_ORGANISER = "demo-organiser"


async def _organiser(settings: Settings) -> str:
    redis = redis_conn.connect(settings)
    password = secrets.token_urlsafe(12)
    try:
        await redis.delete(keys.staff_key(DEMO_ORGANISER))
        await StaffRegistry(redis).create(DEMO_ORGANISER, password, "organiser", None)
    finally:
        await redis.aclose()
    return password


def run_demo(settings: Settings, stop: threading.Event) -> None:
    password = asyncio.run(_organiser(settings))
    print(f"demo: organiser {DEMO_ORGANISER!r}, password {password!r} (for the API and /docs)")
    report = (settings.state_dir / "demo-report").resolve()
    config = FleetConfig(
        target=settings.gateway_url,
        candidates=30,
        media=4,
        proctors=1,
        ramp=20.0,
        duration=60.0,
        report=Path(report),
        switch_faces=1,
        hosts=tuple(settings.media.host_addresses),
        organiser=DEMO_ORGANISER,
        password=password,
        state_dir=settings.state_dir,
        thresholds=("login.p99 < 1s", "tracks_missing == 0"),
    )
    print("demo: simulated exam: 30 candidates (4 with camera and microphone), 1 proctor, 60 s")
    summary, broken = asyncio.run(fleet.run_fleet(config))
    fleet.print_summary(summary, broken, report)
