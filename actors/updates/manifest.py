"""UpdateManifest: releases, signed manifests, staged rollouts with a crash gate and freeze windows.

One named, detached actor holds the update state for every platform and
channel (state lives in Redis, so a restart loses nothing). Organisers
publish a release (the installer goes straight to the object store by a
presigned URL and is verified against its declared size and sha256 before
the manifest is signed), start its rollout, and advance, pause, resume or
roll it back. Devices ask `check`. Every `gate_interval_seconds` the crash
gate compares the new version's crashed-session rate with the previous
version's and halts the rollout when it is worse by more than the margin.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import ray

from actors.updates.freeze import exam_windows, frozen
from actors.updates.gate import verdict
from actors.updates.installers import InstallerStore, installer_key
from actors.updates.rollout import (
    Gate,
    Installer,
    Release,
    Rollout,
    bucket,
    check_platform,
    decide,
    parse_version,
)
from actors.updates.signing import ManifestSigner
from actors.updates.state import UpdateState
from core.process_services import open_process
from infra.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from infra.priority import Priority
from infra.settings import Settings
from infra.telemetry import traced

ACTOR_NAME = "update-manifest"
log = logging.getLogger("examday.updates")
_CACHE_SECONDS = 1.0
_MAX_BACKOFF_S = 60.0


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=3)
class UpdateManifest:
    # Ray runs an async __init__ of an async actor on its loop; type checkers want None.
    async def __init__(self, settings: Settings) -> None:  # type: ignore[misc]
        self.process = open_process(settings, "update_manifest", priority=Priority.LIVE)
        self.settings = settings
        self.redis = self.process.redis
        self.state = UpdateState(self.redis)
        self.signer = ManifestSigner.from_settings(settings)
        self.installers = InstallerStore(self.process.stores, settings.updates.installer_region)
        self._lock = asyncio.Lock()  # mutations are rare: one at a time
        self._cache: dict[tuple[str, str], tuple[float, Any]] = {}
        self._gate = asyncio.get_running_loop().create_task(self._gate_forever())

    # -- releases ---------------------------------------------------------------

    @traced
    async def create_release(self, spec: dict[str, Any], by: str) -> dict[str, Any]:
        """A draft release and a presigned URL to PUT its installer to."""
        platform, channel, version = (
            check_platform(spec["platform"]),
            spec["channel"],
            spec["version"],
        )
        parse_version(version)
        minimum = spec.get("min_supported") or "0"
        if parse_version(minimum, "min_supported") > parse_version(version):
            raise InvalidInput("min_supported is above version", reason="bad_min_supported")
        installer = spec["installer"]
        limit = self.settings.updates.max_installer_bytes
        if installer["size"] > limit:
            raise PayloadTooLarge(
                f"installers are at most {limit} bytes", reason="installer_too_large", limit=limit
            )
        key = installer_key(platform, channel, version, installer["filename"])
        release = Release(
            platform=platform,
            channel=channel,
            version=version,
            min_supported=minimum,
            notes=spec.get("notes", ""),
            installer=Installer(**{**installer, "sha256": installer["sha256"].lower()}, key=key),
            state="awaiting_installer",
            created_by=by,
            created_at=time.time(),
        )
        async with self._lock:
            await self.state.create_release(release)
        expires = self.settings.updates.upload_url_seconds
        url = await self.installers.upload_url(key, expires)
        return {
            "release": _view(release),
            "upload": {"method": "PUT", "url": url, "expires_in": expires},
        }

    @traced
    async def verify_installer(self, platform: str, channel: str, version: str) -> dict[str, Any]:
        """Check the uploaded installer; sign the manifest, or delete the draft and the upload."""
        async with self._lock:
            release = await self._release(platform, channel, version)
            if release.state == "ready":
                return _view(release)
            installer = release.installer
            try:
                await self.installers.verify(installer.key, installer.size, installer.sha256)
            except InvalidInput:
                await self.state.delete_release(release)
                raise
            manifest, signature = self.signer.sign(release.manifest_payload(time.time()))
            ready = release.model_copy(
                update={"state": "ready", "manifest": manifest, "signature": signature}
            )
            await self.state.save_release(ready)
            return _view(ready)

    @traced
    async def releases(self, platform: str, channel: str) -> list[dict[str, Any]]:
        return [_view(r) for r in await self.state.releases(check_platform(platform), channel)]

    async def _release(self, platform: str, channel: str, version: str) -> Release:
        release = await self.state.release(check_platform(platform), channel, version)
        if release is None:
            raise NotFound("no such release", reason="release_not_found")
        return release

    # -- rollouts -----------------------------------------------------------------

    @traced
    async def start_rollout(
        self, platform: str, channel: str, version: str, gate: dict[str, Any] | None, by: str
    ) -> dict[str, Any]:
        async with self._lock:
            release = await self._release(platform, channel, version)
            if release.state != "ready":
                raise Conflict("verify the installer first", reason="release_not_ready")
            current = await self.state.rollout(platform, channel)
            if current is not None and current.state in ("active", "paused", "halted"):
                raise Conflict(
                    f"version {current.version} is still rolling out", reason="rollout_in_progress"
                )
            stable = await self.state.stable(platform, channel)
            if stable is not None and parse_version(version) <= parse_version(stable):
                raise Conflict(f"{version} is not newer than {stable}", reason="not_newer")
            u = self.settings.updates
            rollout = Rollout(
                platform=platform,
                channel=channel,
                version=version,
                previous=stable,
                state="active",
                steps=u.rollout_steps,
                step_by_region={region: -1 for region in self.settings.regions},
                gate=Gate(**gate)
                if gate
                else Gate(margin=u.gate_margin, min_sessions=u.gate_min_sessions),
            )
            return await self._save(rollout.advance(await self._frozen(), by))

    @traced
    async def act(self, platform: str, channel: str, action: str, by: str) -> dict[str, Any]:
        """advance, pause, resume or rollback the current rollout."""
        async with self._lock:
            rollout = await self._rollout(platform, channel)
            if action == "advance":
                moved = rollout.advance(await self._frozen(), by)
            elif action == "pause":
                moved = rollout.pause(by)
            elif action == "resume":
                moved = rollout.resume(by)
            elif action == "rollback":
                moved = rollout.roll_back(by)
            else:
                raise NotFound(f"no action {action!r}", reason="unknown_action")
            return await self._save(moved)

    @traced
    async def rollout(self, platform: str, channel: str) -> dict[str, Any]:
        return _rollout_view(await self._rollout(platform, channel))

    async def _rollout(self, platform: str, channel: str) -> Rollout:
        rollout = await self.state.rollout(check_platform(platform), channel)
        if rollout is None:
            raise NotFound("no rollout on this platform and channel", reason="rollout_not_found")
        return rollout

    async def _save(self, rollout: Rollout) -> dict[str, Any]:
        await self.state.save_rollout(rollout)
        self._cache.pop((rollout.platform, rollout.channel), None)
        return _rollout_view(rollout)

    async def _frozen(self) -> set[str]:
        u = self.settings.updates
        windows = await exam_windows(self.redis)
        before, after = (
            timedelta(minutes=u.freeze_before_minutes),
            timedelta(minutes=u.freeze_after_minutes),
        )
        return set(frozen(windows, datetime.now(UTC), before, after))

    # -- devices --------------------------------------------------------------------

    @traced
    async def check(
        self, platform: str, channel: str, version: str, device: str, region: str
    ) -> dict[str, Any]:
        """What a device (pseudonymised id) running `version` in `region` should do."""
        check_platform(platform)
        parse_version(version)
        if region not in self.settings.regions:
            raise InvalidInput(f"unknown region {region!r}", reason="unknown_region")
        stable, rollout, candidate = await self._offer(platform, channel)
        device_bucket = bucket(device, platform, channel, rollout.version) if rollout else 100.0
        status, offered = decide(version, stable, rollout, candidate, region, device_bucket)
        answer: dict[str, Any] = {"status": status, "version": version}
        if offered is None or status == "up_to_date":
            return answer
        expires = self.settings.updates.download_url_seconds
        return {
            **answer,
            "offered": {
                "version": offered.version,
                "min_supported": offered.min_supported,
                "notes": offered.notes,
            },
            "manifest": offered.manifest,
            "signature": offered.signature,
            "key_id": self.signer.key_id,
            "download": {
                "url": await self.installers.download_url(offered.installer.key, expires),
                "expires_in": expires,
            },
        }

    async def _offer(self, platform: str, channel: str) -> Any:
        cached = self._cache.get((platform, channel))
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        rollout = await self.state.rollout(platform, channel)
        stable_version = await self.state.stable(platform, channel)
        stable = (
            await self.state.release(platform, channel, stable_version) if stable_version else None
        )
        candidate = (
            await self.state.release(platform, channel, rollout.version) if rollout else None
        )
        offer = (stable, rollout, candidate)
        self._cache[(platform, channel)] = (time.monotonic() + _CACHE_SECONDS, offer)
        return offer

    @traced
    async def public_key(self) -> dict[str, str]:
        return self.signer.public_key()

    # -- the crash gate -----------------------------------------------------------------

    @traced
    async def evaluate_gates(self) -> list[dict[str, Any]]:
        """Halt every moving rollout whose version crashes more than its predecessor's."""
        halted = []
        for platform, channel in await self.state.rollouts():
            rollout = await self.state.rollout(platform, channel)
            reason = await verdict(self.redis, rollout) if rollout else None
            if rollout is None or reason is None:
                continue
            async with self._lock:
                current = await self.state.rollout(platform, channel)
                if current is None or current.version != rollout.version:
                    continue
                if current.state not in ("active", "paused"):
                    continue
                await self._save(current.halt(reason))
            await self.state.event("rollout_halted", reason)
            log.warning("crash gate halted a rollout: %s", reason)
            halted.append(reason)
        return halted

    async def _gate_forever(self) -> None:
        interval = self.settings.updates.gate_interval_seconds
        backoff = interval
        while True:
            await asyncio.sleep(backoff)
            try:
                await self.evaluate_gates()
                backoff = interval
            except Exception as exc:  # Redis away: try again later, bounded back-off
                log.warning("crash gate check failed: %s", type(exc).__name__)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)


def _view(release: Release) -> dict[str, Any]:
    return release.model_dump(mode="json")


def _rollout_view(rollout: Rollout) -> dict[str, Any]:
    return {
        **rollout.model_dump(mode="json"),
        "percent_by_region": {r: rollout.percent(r) for r in sorted(rollout.step_by_region)},
    }
