"""One way to call a Ray actor: find it by name, wait out its restart, hand back our own errors.

Every facade over an actor (room and media routing, log ingestion, update
manifests, the face verifier, and `core.rooms` for the subsystems that journal
into a room) calls through here, so that all of them wait out a restarting
actor the same way and none lets Ray's wrapper reach its caller:

- a handle of a detached, named actor is looked up once per process and cached
  (`NamedActors`); a handle of an actor that died is forgotten, and the next
  attempt asks Ray again;
- an attempt that finds the actor restarting, gone, or (for routed calls) no
  longer the owner of what was asked is retried after a pause that doubles,
  with jitter, up to `Retries.attempts` attempts; then the caller gets
  `ActorRestarting` with the facade's problem `reason` and Retry-After;
- an `ExamdayError` the actor raised comes back as itself (our errors pickle
  across Ray, see `infra.errors`), unwrapped from Ray's `RayTaskError`, and so
  does Redis being down inside the actor, as `hot_state_down()` (a 503 with
  Retry-After, like the same outage met in the gateway); any other failure
  inside the actor is not retried;
- every call carries the trace context (`infra.telemetry.actor_call`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from infra.errors import ActorRestarting, ExamdayError, Unavailable
from infra.redis import REDIS_DOWN, hot_state_down
from infra.telemetry import actor_call

# Where a routed call goes on this attempt: asked again before each one, because a
# retry may follow a move.
Route = Callable[[], Awaitable[str]]
# How much longer than its nominal length a pause may be.
_JITTER = 0.25


@dataclass(frozen=True)
class Retries:
    """How a facade waits out an actor that is restarting, moving or gone, and what its
    caller hears when the wait is over (the problem `reason`, with Retry-After)."""

    attempts: int
    reason: str
    detail: str
    first_pause_s: float = 0.05
    max_pause_s: float = 1.0
    # One attempt at most; then the caller hears `timeout_detail` at once, since an
    # actor too busy to answer gets no lighter for being asked again. None: no limit.
    timeout_s: float | None = None
    timeout_detail: str = "the service did not answer in time; try again"
    retry_after_s: float = 1.0

    def pauses(self) -> Iterator[float]:
        pause = self.first_pause_s
        while True:
            # Jitter only lengthens a pause: callers that saw one restart together do
            # not all come back in step, and none gives up sooner than `attempts` says.
            yield pause * random.uniform(1.0, 1.0 + _JITTER)
            pause = min(pause * 2, self.max_pause_s)


def unwrap(exc: RayTaskError) -> BaseException:
    """Our own error raised inside an actor, without Ray's wrapper (it maps to its problem);
    Redis down inside the actor is `hot_state_down()`, not an internal error."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, REDIS_DOWN):
        return hot_state_down()
    return cause if isinstance(cause, ExamdayError) else exc


async def call_once(
    handle: Any, method: str, *args: Any, timeout_s: float | None = None, **kwargs: Any
) -> Any:
    """One call of `method` on `handle`, without retries; our errors come back unwrapped.

    Raises `TimeoutError` after `timeout_s`, `RayActorError` for an actor that died or
    is restarting, and the actor's `RayTaskError` for a failure that is not ours.
    """
    try:
        reply = actor_call(getattr(handle, method), *args, **kwargs)
        if timeout_s is None:
            return await reply
        return await asyncio.wait_for(reply, timeout_s)
    except RayTaskError as exc:
        raise unwrap(exc) from None


class NamedActors:
    """Detached, named actors of one class: started once cluster-wide, handles kept per process."""

    def __init__(self, actor_class: Any, namespace: str) -> None:
        # None for callers that only find actors someone else started.
        self._class = actor_class
        self._namespace = namespace
        self._handles: dict[str, Any] = {}

    def create(self, name: str, *args: Any) -> Any:
        """The actor called `name`, started with `args` if it does not exist yet (blocking)."""
        handle = self._class.options(
            name=name, namespace=self._namespace, get_if_exists=True, lifetime="detached"
        ).remote(*args)
        self._handles[name] = handle
        return handle

    def cached(self, name: str) -> bool:
        return name in self._handles

    async def get(self, name: str) -> Any:
        """The handle of `name`; raises `ValueError` while no such actor is registered."""
        handle = self._handles.get(name)
        if handle is None:
            handle = await asyncio.to_thread(ray.get_actor, name, namespace=self._namespace)
            self._handles[name] = handle
        return handle

    def forget(self, name: str) -> None:
        self._handles.pop(name, None)


class ActorCalls:
    """Calls into the named actors of one class, each waiting out a restart (`Retries`).

    `start_args`: a handle not cached yet is got by starting the actor with these
    (a no-op if it runs), for a facade that owns its actor; without them the actor is
    only looked up. `moved`: errors an actor raises to say that what was asked now
    belongs to another one; the call is routed again. `rerouted` runs whenever an
    attempt failed for a reason that may change where the next one goes.
    """

    def __init__(
        self,
        namespace: str,
        retries: Retries,
        actor_class: Any = None,
        *,
        start_args: tuple[Any, ...] | None = None,
        moved: tuple[type[ExamdayError], ...] = (),
        rerouted: Callable[[], None] | None = None,
    ) -> None:
        self.retries = retries
        self.actors = NamedActors(actor_class, namespace)
        self._start_args = start_args
        self._moved = moved
        self._rerouted = rerouted or (lambda: None)

    def create(self, name: str, *args: Any) -> Any:
        return self.actors.create(name, *args)

    async def handle(self, name: str) -> Any:
        if self._start_args is not None and not self.actors.cached(name):
            return await asyncio.to_thread(self.actors.create, name, *self._start_args)
        return await self.actors.get(name)

    def forget(self, name: str) -> None:
        self.actors.forget(name)

    async def call(self, target: str | Route, method: str, *args: Any, **kwargs: Any) -> Any:
        """`method(*args, **kwargs)` on the actor `target` names (or routes to, per attempt)."""
        retries = self.retries
        pauses = retries.pauses()
        for attempt in range(retries.attempts):
            name = target if isinstance(target, str) else await target()
            try:
                handle = await self.handle(name)
                return await call_once(handle, method, *args, timeout_s=retries.timeout_s, **kwargs)
            except RayTaskError:
                # A failure inside the actor (Ray makes it an instance of the cause's
                # class too, a ValueError say): not a restart, not ours to retry.
                raise
            except self._moved:
                self._rerouted()
            except (RayActorError, ValueError):
                # Dead or restarting (ValueError: not registered again yet): look it up again.
                self.forget(name)
                self._rerouted()
            except TimeoutError:
                raise Unavailable(
                    retries.timeout_detail, reason=retries.reason, retry_after=retries.retry_after_s
                ) from None
            if attempt + 1 < retries.attempts:
                await asyncio.sleep(next(pauses))
        raise ActorRestarting(
            retries.detail, reason=retries.reason, retry_after=retries.retry_after_s
        )
