"""A client refused with 503 (a WHIP/WHEP offer, a face step) waits as the server asks
(Retry-After), bounded and jittered; without the header it backs off by attempt."""

from __future__ import annotations

from loadtests.journey import BUSY_PAUSE_S, _busy_pause
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
