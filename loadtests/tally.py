"""Live counts from a fleet's shares, for the progress line while a rehearsal runs.

A share's records reach the fleet only when the share ends (it may run on another
machine), yet whoever watches a rehearsal needs errors and candidates in rooms as they
happen, to stop a run that went wrong in its first minute rather than after ten. So
each share sends a `Tally` every `EVERY_S`: its counts since it started, a few numbers
whatever the size of the share. A tally travels the way its share runs: a call in this
process, a multiprocessing queue from local processes, and Ray workers are asked for
their latest one (a threaded actor answers while its share's loop runs). `Tallies`
keeps each share's latest and adds them up.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing.queues
import queue
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from loadtests.journey import Recorder

EVERY_S = 1.0
# Tallies taken off a local queue in one go: the shares send one a second each.
MAX_DRAINED = 10_000


@dataclass(frozen=True)
class Tally:
    share: int
    arrived: int = 0
    in_rooms: int = 0
    steps: int = 0
    errors: int = 0
    # The share's worst loop lag since its previous tally: a generator short of CPU shows
    # while it happens, not only in the report.
    lag_s: float = 0.0
    last_error: str = ""  # "step reason" of the share's latest failed step
    last_error_at: float = 0.0  # when it ended (wall clock), to find the fleet's latest


Send = Callable[[Tally], None]
# Subscripted for the type checker only: at run time multiprocessing's Queue is not generic.
TallyQueue: TypeAlias = "multiprocessing.queues.Queue[Tally]"


class Counting:
    """A share's tally from its recorder, each call reading only what is new since the last."""

    def __init__(self, share: int, recorder: Recorder) -> None:
        self.share, self.recorder = share, recorder
        self._steps_read = self._lags_read = self._errors = 0
        self._last_error, self._last_error_at = "", 0.0

    def tally(self) -> Tally:
        steps, lags = self.recorder.steps, self.recorder.loop_lag
        for step in steps[self._steps_read :]:
            if not step.ok:
                self._errors += 1
                self._last_error = f"{step.step} {step.reason}".strip()
                self._last_error_at = self.recorder.epoch + step.start + step.seconds
        self._steps_read = len(steps)
        lag = max(lags[self._lags_read :], default=0.0)
        self._lags_read = len(lags)
        return Tally(
            self.share, self.recorder.arrived, self.recorder.in_rooms, self._steps_read,
            self._errors, lag, self._last_error, self._last_error_at,
        )  # fmt: skip


async def send_every(counting: Counting, send: Send, stop: asyncio.Event) -> None:
    """Send the share's tally every `EVERY_S` until `stop`, and once more then."""
    while not stop.is_set():
        send(counting.tally())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), EVERY_S)
    send(counting.tally())


class Tallies:
    """The latest tally of each share, and their sums."""

    def __init__(self) -> None:
        self.latest: dict[int, Tally] = {}

    def take(self, tally: Tally) -> None:
        self.latest[tally.share] = tally

    def drain(self, source: TallyQueue) -> None:
        """Take what local processes have sent so far, without waiting for more."""
        for _ in range(MAX_DRAINED):
            try:
                self.take(source.get_nowait())
            except queue.Empty:
                return

    def arrived(self) -> int:
        """Candidates whose journey has begun, over every share heard from (a share's first
        tally goes out as it starts, before its first arrival)."""
        return sum(t.arrived for t in self.latest.values())

    def text(self) -> str:
        """'in rooms N, steps N, errors N (last: ...), generator lag S': empty before the
        first tally, so that a line does not claim zeros it has not heard. The last error
        is the fleet's latest, whichever share it failed in."""
        if not self.latest:
            return ""
        tallies = list(self.latest.values())
        errors = sum(t.errors for t in tallies)
        failed = [t for t in tallies if t.last_error]
        last = max(failed, key=lambda t: t.last_error_at).last_error if failed else ""
        words = [
            f"in rooms {sum(t.in_rooms for t in tallies):,}",
            f"steps {sum(t.steps for t in tallies):,}",
            f"errors {errors:,}" + (f" (last: {last})" if last else ""),
            f"generator lag {max(t.lag_s for t in tallies):.2f} s",
        ]
        return ", ".join(words)
