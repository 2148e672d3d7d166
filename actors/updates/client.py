"""Gateway side of update manifests: the one UpdateManifest actor, created at gateway start."""

from __future__ import annotations

import logging
from typing import Any

from actors.updates.manifest import ACTOR_NAME, UpdateManifest
from infra.actor_calls import ActorCalls, Retries
from infra.errors import Unavailable
from infra.pseudonym import Pseudonyms
from infra.settings import Settings

_RETRIES = Retries(attempts=6, reason="updates_unavailable", detail="updates are restarting")
log = logging.getLogger(__name__)


class UpdateClient:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pseudonyms = Pseudonyms(settings.pseudonym_key)
        # The gateway owns this actor: a lookup starts it if it is not running.
        self._manifest = ActorCalls(
            settings.ray_namespace, _RETRIES, UpdateManifest, start_args=(settings,)
        )

    async def start(self) -> None:
        """Create the actor if need be, and wait until it answers (or retries run out).

        A manifest service that cannot start must not keep the gateway from serving
        logins: version checks then answer 503 until it comes up.
        """
        try:
            await self.public_key()
        except Unavailable:
            log.warning("the update manifest actor did not answer at gateway start")

    async def _call(self, method: str, *args: Any) -> Any:
        """Call the actor, waiting out a restart (bounded); its 4xx errors come back as ours."""
        return await self._manifest.call(ACTOR_NAME, method, *args)

    async def check(
        self, platform: str, channel: str, version: str, device_id: str, region: str
    ) -> dict[str, Any]:
        # The clear device id stops here: the actor sees its pseudonym only.
        device = self.pseudonyms.device(device_id)
        answer: dict[str, Any] = await self._call(
            "check", platform, channel, version, device, region
        )
        return answer

    async def public_key(self) -> dict[str, str]:
        """The Ed25519 public key that update manifests are signed with."""
        key: dict[str, str] = await self._call("public_key")
        return key

    async def create_release(self, spec: dict[str, Any], by: str) -> dict[str, Any]:
        """A draft release and a presigned URL to PUT its installer to."""
        release: dict[str, Any] = await self._call("create_release", spec, by)
        return release

    async def verify_installer(self, platform: str, channel: str, version: str) -> dict[str, Any]:
        """Check the uploaded installer; sign and publish the release's manifest."""
        release: dict[str, Any] = await self._call("verify_installer", platform, channel, version)
        return release

    async def releases(self, platform: str, channel: str) -> list[dict[str, Any]]:
        releases: list[dict[str, Any]] = await self._call("releases", platform, channel)
        return releases

    async def start_rollout(
        self, platform: str, channel: str, version: str, gate: dict[str, Any] | None, by: str
    ) -> dict[str, Any]:
        rollout: dict[str, Any] = await self._call(
            "start_rollout", platform, channel, version, gate, by
        )
        return rollout

    async def rollout(self, platform: str, channel: str) -> dict[str, Any]:
        rollout: dict[str, Any] = await self._call("rollout", platform, channel)
        return rollout

    async def act(self, platform: str, channel: str, action: str, by: str) -> dict[str, Any]:
        """`action` (advance, pause, resume, rollback) on the rollout of `platform`/`channel`."""
        rollout: dict[str, Any] = await self._call("act", platform, channel, action, by)
        return rollout

    async def evaluate_gates(self) -> list[dict[str, Any]]:
        """Halt every moving rollout whose version crashes more than its predecessor's."""
        halted: list[dict[str, Any]] = await self._call("evaluate_gates")
        return halted
