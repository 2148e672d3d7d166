"""Gateway side of update manifests: the one UpdateManifest actor, created at gateway start."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError

from actors.ingest.client import unwrap
from actors.updates.manifest import ACTOR_NAME, UpdateManifest
from infra.errors import Unavailable
from infra.pseudonym import Pseudonyms
from infra.settings import Settings
from infra.telemetry import actor_call

_ATTEMPTS = 6
log = logging.getLogger(__name__)


class UpdateClient:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pseudonyms = Pseudonyms(settings.pseudonym_key)
        self._handle: Any = None

    def _create(self) -> Any:
        return UpdateManifest.options(  # type: ignore[attr-defined]
            name=ACTOR_NAME,
            namespace=self.settings.ray_namespace,
            get_if_exists=True,
            lifetime="detached",
        ).remote(self.settings)

    async def start(self) -> None:
        """Create the actor if need be, and wait until it answers (or retries run out).

        A manifest service that cannot start must not keep the gateway from serving
        logins: version checks then answer 503 until it comes up.
        """
        try:
            await self.call("public_key")
        except Unavailable:
            log.warning("the update manifest actor did not answer at gateway start")

    async def call(self, method: str, *args: Any) -> Any:
        """Call the actor, waiting out a restart (bounded); its 4xx errors come back as ours."""
        delay = 0.05
        for _ in range(_ATTEMPTS):
            try:
                if self._handle is None:
                    self._handle = await asyncio.to_thread(self._create)
                return await actor_call(getattr(self._handle, method), *args)
            except RayTaskError as exc:
                raise unwrap(exc) from None
            except (RayActorError, ActorUnavailableError):
                self._handle = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        raise Unavailable("updates are restarting", reason="updates_unavailable", retry_after=1)

    async def check(
        self, platform: str, channel: str, version: str, device_id: str, region: str
    ) -> dict[str, Any]:
        # The clear device id stops here: the actor sees its pseudonym only.
        device = self.pseudonyms.device(device_id)
        answer: dict[str, Any] = await self.call(
            "check", platform, channel, version, device, region
        )
        return answer
