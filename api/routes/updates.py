"""Update manifests: the version check devices ask, the signing key, and release management.

Publishing releases and moving rollouts is for release managers alone: a signed
installer runs on every device of every exam, far beyond any organiser's own
exams; admins are refused too (why: `api.security.current_release_manager`).
Platform, channel and version travel in the body or the query, not the path:
they name no exam's resource.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from api.deps import RuntimeDep
from api.models import Channel, ReleaseCreate, ReleaseRef, RolloutRef, RolloutStart, UpdateCheck
from api.security import ReleaseManagerDep, optional_token

router = APIRouter(tags=["updates"])
PlatformQuery = Annotated[str, Query(max_length=32)]
ChannelQuery = Annotated[Channel, Query()]


@router.get("/.well-known/examday-update-key")
async def update_key(runtime: RuntimeDep) -> dict[str, str]:
    """The Ed25519 public key that update manifests are signed with."""
    return await runtime.updates.public_key()


@router.post("/v1/updates/check")
async def check(body: UpdateCheck, request: Request, runtime: RuntimeDep) -> dict[str, Any]:
    """up_to_date, optional_update or required_update, with a signed manifest and a download URL.

    The device's region is its exam's when a candidate's token comes along, else
    the one it names, else the default region.
    """
    region = body.region or runtime.settings.ingest.default_region
    token = optional_token(request)
    if token is not None:
        claims, _ = await runtime.sessions.resolve(token)
        if claims.role == "candidate" and claims.exam is not None:
            region = await runtime.regional.region_of(claims.exam)
    return await runtime.updates.check(
        body.platform, body.channel, body.version, body.device_id, region
    )


@router.post("/v1/updates/releases", status_code=201)
async def create_release(
    body: ReleaseCreate, manager: ReleaseManagerDep, runtime: RuntimeDep
) -> dict[str, Any]:
    """A draft release; PUT the installer to the returned URL, then verify it."""
    return await runtime.updates.create_release(body.model_dump(), manager.name)


@router.post("/v1/updates/releases/verify")
async def verify_installer(
    body: ReleaseRef, manager: ReleaseManagerDep, runtime: RuntimeDep
) -> dict[str, Any]:
    """Check the uploaded installer's size and sha256; sign and publish the manifest."""
    return await runtime.updates.verify_installer(body.platform, body.channel, body.version)


@router.get("/v1/updates/releases")
async def list_releases(
    platform: PlatformQuery, manager: ReleaseManagerDep, runtime: RuntimeDep,
    channel: ChannelQuery = "stable",
) -> dict[str, Any]:  # fmt: skip
    return {"releases": await runtime.updates.releases(platform, channel)}


@router.post("/v1/updates/rollouts", status_code=201)
async def start_rollout(
    body: RolloutStart, manager: ReleaseManagerDep, runtime: RuntimeDep
) -> dict[str, Any]:
    """Start at the first step in every region where no exam is on (409 if none)."""
    gate = body.gate.model_dump() if body.gate else None
    return await runtime.updates.start_rollout(
        body.platform, body.channel, body.version, gate, manager.name
    )


@router.get("/v1/updates/rollouts")
async def rollout_state(
    platform: PlatformQuery, manager: ReleaseManagerDep, runtime: RuntimeDep,
    channel: ChannelQuery = "stable",
) -> dict[str, Any]:  # fmt: skip
    return await runtime.updates.rollout(platform, channel)


async def _act(body: RolloutRef, action: str, by: str, runtime: RuntimeDep) -> dict[str, Any]:
    return await runtime.updates.act(body.platform, body.channel, action, by)


@router.post("/v1/updates/rollouts/advance")
async def advance(
    body: RolloutRef, manager: ReleaseManagerDep, runtime: RuntimeDep
) -> dict[str, Any]:
    """One step further, except in regions where an exam is on (409 if nothing can move)."""
    return await _act(body, "advance", manager.name, runtime)


@router.post("/v1/updates/rollouts/pause")
async def pause(
    body: RolloutRef, manager: ReleaseManagerDep, runtime: RuntimeDep
) -> dict[str, Any]:
    return await _act(body, "pause", manager.name, runtime)


@router.post("/v1/updates/rollouts/resume")
async def resume(
    body: RolloutRef, manager: ReleaseManagerDep, runtime: RuntimeDep
) -> dict[str, Any]:
    return await _act(body, "resume", manager.name, runtime)


@router.post("/v1/updates/rollouts/rollback")
async def rollback(
    body: RolloutRef, manager: ReleaseManagerDep, runtime: RuntimeDep
) -> dict[str, Any]:
    """Stop offering the version; devices are offered the stable one again."""
    return await _act(body, "rollback", manager.name, runtime)
