"""VerifierClient: how the gateway and other actors call the face verifier service.

It asks the pool for its replicas (again every `CLIENT_REFRESH_S`, or at once after a
replica vanished) and sends each call to the replica with the fewest frames this
process has in flight there. A replica that answers `verifier_busy` or has gone away
is skipped for the next one, each replica at most once per call; when every replica
is busy the caller gets the 503 `verifier_busy` with the shortest Retry-After. Errors
about the input (`no_face`, `truncated_image`, ...) come back as the `ExamdayError`
the replica raised, unwrapped from Ray's `RayTaskError`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from typing import Any

from ray.exceptions import ActorUnavailableError, RayActorError

from actors.face import pool as face_pool
from actors.face.pool import CLIENT_REFRESH_S
from actors.face.results import EnrolOutcome, FrameSummary, LivenessOutcome, VerifyOutcome
from infra.actor_calls import call_once
from infra.errors import Unavailable
from infra.settings import Settings
from infra.telemetry import actor_call
from ml.embedding import Reuse

# Beyond the replica's own call timeout: Ray's round trip and a restart in between.
_SLACK_S = 10.0


class VerifierClient:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool: Any = None
        self._replicas: list[tuple[str, Any]] = []
        self._fetched = 0.0
        self._in_flight: dict[str, int] = {}

    async def start(self) -> None:
        """Make sure the pool exists and starts its replicas; does not wait for them."""
        pool = await self._pool_handle()
        actor_call(pool.members)  # the pool loads the first replica in the background

    async def analyse(self, image: bytes, reuse: Reuse | None = None) -> FrameSummary:
        summary: FrameSummary = await self._call("analyse", 1, image, reuse)
        return summary

    async def enrol(self, image: bytes) -> EnrolOutcome:
        outcome: EnrolOutcome = await self._call("enrol", 1, image)
        return outcome

    async def verify(self, template: bytes, image: bytes) -> VerifyOutcome:
        outcome: VerifyOutcome = await self._call("verify", 1, template, image)
        return outcome

    async def liveness(
        self, movement: str, nonce: str, frames: Sequence[bytes], template: bytes | None
    ) -> LivenessOutcome:
        outcome: LivenessOutcome = await self._call(
            "liveness", len(frames), movement, nonce, list(frames), template
        )
        return outcome

    async def status(self) -> dict[str, Any]:
        pool = await self._pool_handle()
        status: dict[str, Any] = await actor_call(pool.status)
        return status

    # -- routing ----------------------------------------------------------------------

    async def _call(self, method: str, cost: int, *args: Any) -> Any:
        busy: list[Unavailable] = []
        for name, handle in self._by_load(await self._members()):
            self._in_flight[name] = self._in_flight.get(name, 0) + cost
            try:
                return await call_once(
                    handle,
                    method,
                    *args,
                    timeout_s=self.settings.verifier.call_timeout_s + _SLACK_S,
                )
            except Unavailable as exc:
                if exc.reason != "verifier_busy":
                    raise
                busy.append(exc)
                continue
            except RayActorError:
                self._fetched = 0.0  # gone or restarting: ask the pool again next time
            except TimeoutError:
                raise Unavailable(
                    "The face verifier did not answer in time.",
                    reason="verifier_timeout",
                    retry_after=5,
                ) from None
            finally:
                self._in_flight[name] -= cost
        if busy:
            raise min(busy, key=lambda error: error.retry_after or 1.0)
        raise Unavailable(
            "No face verifier is running; try again shortly.",
            reason="verifier_unavailable",
            retry_after=5,
        )

    def _by_load(self, members: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        shuffled = random.sample(members, len(members))  # ties go anywhere
        return sorted(shuffled, key=lambda member: self._in_flight.get(member[0], 0))

    async def _members(self) -> list[tuple[str, Any]]:
        if not self._replicas or time.monotonic() - self._fetched > CLIENT_REFRESH_S:
            pool = await self._pool_handle()
            try:
                members: list[tuple[str, Any]] = await asyncio.wait_for(
                    actor_call(pool.members), face_pool.START_TIMEOUT_S
                )
            except (RayActorError, ActorUnavailableError, TimeoutError):
                self._pool = None
                raise Unavailable(
                    "The face verifier pool is restarting; try again shortly.",
                    reason="verifier_unavailable",
                    retry_after=5,
                ) from None
            self._replicas, self._fetched = members, time.monotonic()
            for name in list(self._in_flight):
                if self._in_flight[name] == 0 and name not in dict(members):
                    del self._in_flight[name]
        return self._replicas

    async def _pool_handle(self) -> Any:
        if self._pool is None:
            self._pool = await asyncio.to_thread(face_pool.get_or_create, self.settings)
        return self._pool
