"""The one actor-call client, against the real actors of a running stack."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from ray.exceptions import RayTaskError

from actors.updates.manifest import ACTOR_NAME
from infra.actor_calls import ActorCalls, Retries
from infra.errors import ActorRestarting, InvalidInput
from infra.settings import Settings

RETRIES = Retries(attempts=3, reason="thing_unavailable", detail="gone", first_pause_s=0.01)


class Counting:
    """A route that counts how often it is asked, and how often the caller lost track."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.asked = 0
        self.rerouted = 0

    async def route(self) -> str:
        self.asked += 1
        return self.name

    def lost(self) -> None:
        self.rerouted += 1


async def test_an_actor_that_stays_gone_gives_the_callers_reason_after_every_attempt(
    settings: Settings, app: FastAPI
) -> None:
    target = Counting("no-such-actor")
    calls = ActorCalls(settings.ray_namespace, RETRIES, rerouted=target.lost)

    with pytest.raises(ActorRestarting) as caught:
        await calls.call(target.route, "ping")

    assert (caught.value.status, caught.value.reason) == (503, "thing_unavailable")
    assert caught.value.retry_after == 1
    # Routed afresh before each attempt, and the route told after each failure.
    assert (target.asked, target.rerouted) == (3, 3)


async def test_our_error_inside_an_actor_comes_back_as_itself_without_retries(
    settings: Settings, app: FastAPI
) -> None:
    target = Counting(ACTOR_NAME)  # the gateway started the update manifest actor
    calls = ActorCalls(settings.ray_namespace, RETRIES, rerouted=target.lost)

    with pytest.raises(InvalidInput) as caught:
        await calls.call(target.route, "rollout", "no-such-platform", "stable")

    assert type(caught.value) is InvalidInput
    assert caught.value.reason == "unknown_platform"
    assert (target.asked, target.rerouted) == (1, 0)


async def test_any_other_failure_inside_an_actor_is_not_taken_for_a_restart(
    settings: Settings, app: FastAPI
) -> None:
    target = Counting(ACTOR_NAME)
    calls = ActorCalls(settings.ray_namespace, RETRIES, rerouted=target.lost)

    # A missing argument: a TypeError inside the actor, which Ray wraps.
    with pytest.raises(RayTaskError):
        await calls.call(target.route, "rollout", "ios")

    assert (target.asked, target.rerouted) == (1, 0)
