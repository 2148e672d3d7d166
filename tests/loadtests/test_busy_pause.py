"""A client refused with 503 (a WHIP/WHEP offer, a face step) waits as the server asks
(Retry-After), bounded and jittered; without the header it backs off by attempt."""

from __future__ import annotations

from loadtests.journey import BUSY_PAUSE_S, DOOR_PAUSE_MAX_S, _busy_pause, door_pause
from loadtests.webrtc import MediaRefused


def test_retry_after_is_honoured_with_jitter_and_a_bound() -> None:
    asked = MediaRefused(503, "media shard full", "3")
    assert asked.retry_after == 3.0
    pauses = [_busy_pause(asked.retry_after, attempt=1) for _ in range(200)]
    assert all(0.75 * 3 <= p <= 1.5 * 3 for p in pauses)
    assert len({round(p, 6) for p in pauses}) > 1  # jittered, not in lockstep
    greedy = MediaRefused(503, "", "3600")
    assert max(_busy_pause(greedy.retry_after, attempt=1) for _ in range(50)) <= 15.0


def test_without_retry_after_the_pause_grows_by_attempt() -> None:
    silent = MediaRefused(503, "", None)
    assert silent.retry_after is None
    assert MediaRefused(503, "", "Wed, 21 Oct 2026 07:28:00 GMT").retry_after is None
    first = [_busy_pause(silent.retry_after, attempt=1) for _ in range(50)]
    third = [_busy_pause(silent.retry_after, attempt=3) for _ in range(50)]
    assert max(first) <= 1.5 * BUSY_PAUSE_S
    assert min(third) >= 0.75 * 3 * BUSY_PAUSE_S


def test_a_refusal_at_the_gateway_door_backs_off_doubling_to_a_bound() -> None:
    """`gateway_busy` (a full gateway, `api.limits`): the Retry-After first, then twice as
    long at each refusal, so that a refused crowd thins out; jittered upwards only."""
    pauses = {attempt: [door_pause(1.0, attempt) for _ in range(100)] for attempt in (1, 2, 3, 9)}
    assert all(1.0 <= p <= 1.5 for p in pauses[1])
    assert all(2.0 <= p <= 3.0 for p in pauses[2])
    assert all(4.0 <= p <= 6.0 for p in pauses[3])
    assert all(DOOR_PAUSE_MAX_S <= p <= 1.5 * DOOR_PAUSE_MAX_S for p in pauses[9])
    assert len({round(p, 6) for p in pauses[1]}) > 1
    assert 1.0 <= door_pause(None, 1) <= 1.5
