"""Publishing releases through the API, and seeding rollouts where a freeze would block them."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import httpx

from actors.updates.rollout import Gate, Rollout, RolloutState
from actors.updates.state import UpdateState
from api.runtime import Runtime


def channel() -> str:
    """A channel of the test's own, so that tests never see each other's releases."""
    return f"t{secrets.token_hex(6)}"


async def publish(
    client: httpx.AsyncClient,
    manager: httpx.Headers,
    platform: str,
    channel: str,
    version: str,
    *,
    min_supported: str | None = None,
    installer: bytes | None = None,
) -> dict[str, Any]:
    """Create the release, PUT the installer to the presigned URL, verify it."""
    body = installer if installer is not None else secrets.token_bytes(4096)
    spec = {
        "platform": platform,
        "channel": channel,
        "version": version,
        "min_supported": min_supported,
        "notes": f"release {version}",
        "installer": {
            "filename": f"examday-{version}.bin",
            "size": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        },
    }
    created = await client.post("/v1/updates/releases", json=spec, headers=manager)
    assert created.status_code == 201, created.text
    upload = created.json()["upload"]
    async with httpx.AsyncClient(timeout=30) as s3:
        put = await s3.put(upload["url"], content=body)
        assert put.status_code == 200, put.text
    ref = {"platform": platform, "channel": channel, "version": version}
    verified = await client.post("/v1/updates/releases/verify", json=ref, headers=manager)
    assert verified.status_code == 200, verified.text
    release: dict[str, Any] = verified.json()
    return release


async def seed_rollout(
    runtime: Runtime,
    platform: str,
    channel: str,
    version: str,
    *,
    previous: str | None,
    step: int,
    state: RolloutState = "active",
    gate: Gate | None = None,
) -> Rollout:
    """A rollout at `step` in every region, stored as the update actor stores it.

    Through the API a step only advances where no exam is on, and the test
    session holds running exams in every region; so tests that need a rollout
    already under way put it in place with the actor's own state store.
    """
    settings = runtime.settings
    rollout = Rollout(
        platform=platform,
        channel=channel,
        version=version,
        previous=previous,
        state=state,
        steps=settings.updates.rollout_steps,
        step_by_region={region: step for region in settings.regions},
        gate=gate or Gate(margin=0.02, min_sessions=1000),
    )
    await UpdateState(runtime.redis).save_rollout(rollout)
    return rollout
