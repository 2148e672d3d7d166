"""Releases, staged rollouts and the version-check answer: pure logic, no I/O.

A rollout offers a new version to a growing share of devices, region by
region: each region has its own step (so an exam's region can stay frozen
while others move on). A device's bucket, in [0, 100), comes from its
pseudonymised id and the release, so its answer is stable while the
rollout stands still, and the first 1% differs from one release to the next.
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from infra.errors import Conflict, InvalidInput
from infra.settings.updates import PLATFORMS

RolloutState = Literal["active", "paused", "halted", "rolled_back", "complete"]
Status = Literal["up_to_date", "optional_update", "required_update"]
_VERSION = re.compile(r"[0-9]{1,6}(\.[0-9]{1,6}){0,3}")
_HISTORY = 50


def parse_version(value: str, field: str = "version") -> tuple[int, ...]:
    if not _VERSION.fullmatch(value):
        raise InvalidInput(
            f"{field} {value!r} is not a version like 1.2.3", reason="bad_version", field=field
        )
    parts = tuple(int(p) for p in value.split("."))
    return parts + (0,) * (4 - len(parts))


def check_platform(platform: str) -> str:
    if platform not in PLATFORMS:
        raise InvalidInput(
            f"unknown platform {platform!r}", reason="unknown_platform", known=list(PLATFORMS)
        )
    return platform


def bucket(device: str, platform: str, channel: str, version: str) -> float:
    digest = hashlib.sha256(f"{platform}\x00{channel}\x00{version}\x00{device}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000 / 100


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Installer(_Frozen):
    filename: str
    size: int
    sha256: str
    key: str


class Release(_Frozen):
    platform: str
    channel: str
    version: str
    min_supported: str
    notes: str
    installer: Installer
    state: Literal["awaiting_installer", "ready"]
    created_by: str
    created_at: float
    manifest: str | None = None  # the signed bytes, canonical JSON
    signature: str | None = None

    def manifest_payload(self, published_at: float) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "channel": self.channel,
            "version": self.version,
            "min_supported": self.min_supported,
            "notes": self.notes,
            "installer": {
                "filename": self.installer.filename,
                "size": self.installer.size,
                "sha256": self.installer.sha256,
            },
            "published_at": published_at,
        }


class Gate(_Frozen):
    margin: float
    min_sessions: int


class Rollout(_Frozen):
    platform: str
    channel: str
    version: str
    previous: str | None
    state: RolloutState
    steps: tuple[int, ...]
    step_by_region: dict[str, int]  # index into steps; -1: not started there
    gate: Gate
    halted: dict[str, Any] | None = None
    history: tuple[dict[str, Any], ...] = ()

    def percent(self, region: str) -> int:
        index = self.step_by_region.get(region, -1)
        return 0 if index < 0 else self.steps[index]

    def offers(self, region: str, device_bucket: float) -> bool:
        return self.state in ("active", "paused", "complete") and device_bucket < self.percent(
            region
        )

    def _moved(self, action: str, by: str, **changes: Any) -> Rollout:
        entry = {"action": action, "by": by, "at": time.time()}
        history = (*self.history, entry)[-_HISTORY:]
        return self.model_copy(update={**changes, "history": history})

    def advance(self, frozen: set[str], by: str) -> Rollout:
        """One step further in every region not frozen; 409 if nothing could move."""
        self._require({"active"}, "advance")
        last = len(self.steps) - 1
        steps = dict(self.step_by_region)
        moved = [r for r, i in steps.items() if r not in frozen and i < last]
        if not moved:
            if any(i < last for i in steps.values()):
                raise Conflict(
                    "an exam is running in every region still behind; no step may advance",
                    reason="freeze_window",
                    frozen=sorted(frozen),
                )
            raise Conflict("the rollout is at 100% everywhere", reason="rollout_complete")
        for region in moved:
            steps[region] += 1
        done = all(i == last for i in steps.values())
        return self._moved(
            "advance", by, step_by_region=steps, state="complete" if done else "active"
        )

    def pause(self, by: str) -> Rollout:
        self._require({"active"}, "pause")
        return self._moved("pause", by, state="paused")

    def resume(self, by: str) -> Rollout:
        self._require({"paused", "halted"}, "resume")
        return self._moved("resume", by, state="active", halted=None)

    def roll_back(self, by: str) -> Rollout:
        self._require({"active", "paused", "halted"}, "roll back")
        return self._moved("rollback", by, state="rolled_back")

    def halt(self, reason: dict[str, Any]) -> Rollout:
        self._require({"active", "paused"}, "halt")
        return self._moved("halt", "crash-gate", state="halted", halted=reason)

    def _require(self, states: set[str], action: str) -> None:
        if self.state not in states:
            raise Conflict(
                f"cannot {action} a rollout that is {self.state}",
                reason="rollout_state",
                state=self.state,
            )


def decide(
    version: str, stable: Release | None, rollout: Rollout | None, candidate: Release | None,
    region: str, device_bucket: float,
) -> tuple[Status, Release | None]:  # fmt: skip
    """What to tell a device running `version`, and which release it is offered."""
    current = parse_version(version)
    offered = stable
    if rollout is not None and candidate is not None and rollout.offers(region, device_bucket):
        offered = candidate
    if offered is None:
        return "up_to_date", None
    if current < parse_version(offered.min_supported):
        return "required_update", offered
    if current < parse_version(offered.version):
        return "optional_update", offered
    return "up_to_date", offered
