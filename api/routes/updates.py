"""Update manifests: the version check devices ask, the signing key, and release management.

Publishing releases and moving rollouts is for organisers (there is no
separate operator role yet).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request

from api.deps import RuntimeDep
from api.models import Channel, ReleaseCreate, RolloutStart, UpdateCheck
from api.routes.logs import optional_token
from api.security import OrganiserDep

router = APIRouter(tags=["updates"])
PlatformPath = Annotated[str, Path(max_length=32)]
VersionPath = Annotated[str, Path(max_length=64)]
Action = Literal["advance", "pause", "resume", "rollback"]


@router.get("/.well-known/examday-update-key")
async def update_key(runtime: RuntimeDep) -> dict[str, str]:
    """The Ed25519 public key that update manifests are signed with."""
    key: dict[str, str] = await runtime.updates.call("public_key")
    return key


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
    body: ReleaseCreate, organiser: OrganiserDep, runtime: RuntimeDep
) -> dict[str, Any]:
    """A draft release; PUT the installer to the returned URL, then verify it."""
    release: dict[str, Any] = await runtime.updates.call(
        "create_release", body.model_dump(), organiser.name
    )
    return release


@router.post("/v1/updates/releases/{platform}/{channel}/{version}/verify")
async def verify_installer(
    platform: PlatformPath,
    channel: Channel,
    version: VersionPath,
    organiser: OrganiserDep,
    runtime: RuntimeDep,
) -> dict[str, Any]:
    """Check the uploaded installer's size and sha256; sign and publish the manifest."""
    release: dict[str, Any] = await runtime.updates.call(
        "verify_installer", platform, channel, version
    )
    return release


@router.get("/v1/updates/releases/{platform}/{channel}")
async def list_releases(
    platform: PlatformPath, channel: Channel, organiser: OrganiserDep, runtime: RuntimeDep
) -> dict[str, Any]:
    return {"releases": await runtime.updates.call("releases", platform, channel)}


@router.post("/v1/updates/rollouts/{platform}/{channel}", status_code=201)
async def start_rollout(
    platform: PlatformPath,
    channel: Channel,
    body: RolloutStart,
    organiser: OrganiserDep,
    runtime: RuntimeDep,
) -> dict[str, Any]:
    gate = body.gate.model_dump() if body.gate else None
    rollout: dict[str, Any] = await runtime.updates.call(
        "start_rollout", platform, channel, body.version, gate, organiser.name
    )
    return rollout


@router.get("/v1/updates/rollouts/{platform}/{channel}")
async def rollout_state(
    platform: PlatformPath, channel: Channel, organiser: OrganiserDep, runtime: RuntimeDep
) -> dict[str, Any]:
    rollout: dict[str, Any] = await runtime.updates.call("rollout", platform, channel)
    return rollout


@router.post("/v1/updates/rollouts/{platform}/{channel}/{action}")
async def move_rollout(
    platform: PlatformPath,
    channel: Channel,
    action: Action,
    organiser: OrganiserDep,
    runtime: RuntimeDep,
) -> dict[str, Any]:
    """advance (one step, except in frozen regions), pause, resume or rollback."""
    rollout: dict[str, Any] = await runtime.updates.call(
        "act", platform, channel, action, organiser.name
    )
    return rollout
