"""Dynamic batching in front of one model: frames from many callers, one model call at a time.

Callers `submit` one image with a `finish` step (enrol, verify, summarise) or a `solo`
job that runs alone (a liveness check analyses its own frames as one batch). A loop on
the event loop takes the next batch as soon as the model is free: up to `max_batch`
single-image jobs, waiting at most `max_wait_s` for the batch to fill when fewer are
queued. Decoding, the model and every `finish` run in one worker thread, never on the
event loop; each image is decoded on its own, so one bad upload fails only its caller.

Back-pressure: the batcher holds at most `max_queue` frames (waiting plus running);
beyond that `submit` raises `Unavailable(reason="verifier_busy")` at once, with a
Retry-After from the measured time per frame. A job whose caller has given up
(`deadline` passed, or its future cancelled) is dropped before it costs model time.

Priority: a candidate waits on enrolment, verification and liveness; a monitoring
sample (`background=True`) waits on nobody, and the next one comes a few seconds later.
So candidates' jobs go first, background samples fill what room a batch has left, and
a candidate's job that finds the queue full sheds the oldest waiting samples (each
answered `verifier_busy`) before it is refused itself. Nor does a candidate wait for a
batch of samples already running, or for the samples that filled its own batch: with
`background_slice` set (CPU replicas, where batching saves a frame little), the model
thread runs the candidates' jobs of a batch as a slice of their own, answered at once,
and its samples in slices of `background_slice` frames, stopping before the next slice
when a candidate's job is waiting; the samples not run go back to the head of their
queue, after the candidates' jobs. So a candidate's job waits behind at most one slice
of samples, the one running when it came.

Every answered job's latency, from `submit` to its result, is counted in fixed
buckets (`LATENCY_BUCKETS_S`): cheap to keep, and summable across replicas and
scrapes, which a moving average or a percentile is not.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from infra.errors import ExamdayError, InvalidInput, Unavailable

log = logging.getLogger(__name__)

F = TypeVar("F")  # a decoded frame
A = TypeVar("A")  # the model's analysis of one frame

# The outcome of a background job the model thread put off for a candidate's job.
_DEFERRED = object()

# Upper bounds in seconds; batching waits milliseconds, a CPU batch of 32 takes seconds,
# and nothing is answered after `call_timeout_s` (30 s by default).
LATENCY_BUCKETS_S = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(eq=False)
class _Job:
    cost: int
    deadline: float
    enqueued: float
    future: asyncio.Future[Any]
    image: bytes | None = None  # a single-image job, merged into batches
    finish: Callable[[Any], Any] | None = None
    solo: Callable[[], Any] | None = None  # a job that runs alone
    background: bool = False  # nobody waits on it: it goes after every candidate's job
    hint: Any = None  # passed to `analyse_hinted` beside the frame (monitoring's reuse)


@dataclass
class BatchStats:
    batches: int = 0
    frames: int = 0
    dropped: int = 0
    refused: int = 0
    shed: int = 0  # background samples answered busy to make room for a candidate's job
    deferred: int = 0  # background samples put back in the queue for a candidate's job
    largest_batch: int = 0
    seconds_per_frame: float = 0.1  # moving average, seeded with a CPU-ish guess
    sizes: dict[int, int] = field(default_factory=dict)
    # Answered jobs per latency bucket (the last one: above every bound), and their sum.
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    latency_sum_s: float = 0.0
    # CPU time of the model thread (decode, model, finish); with one torch thread the
    # rest of the process's CPU time is serving (Ray calls, pickling, the event loop).
    model_cpu_s: float = 0.0

    def observe_latency(self, seconds: float) -> None:
        self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.latency_sum_s += seconds

    def latency(self) -> dict[str, Any]:
        """Cumulative counts per upper bound, Prometheus style ("+Inf" is every job)."""
        buckets: list[tuple[str, int]] = []
        total = 0
        bounds = [*map(str, LATENCY_BUCKETS_S), "+Inf"]
        for bound, count in zip(bounds, self.latency_counts, strict=True):
            total += count
            buckets.append((bound, total))
        return {"buckets": buckets, "count": total, "sum": round(self.latency_sum_s, 6)}


class Batcher(Generic[F, A]):
    def __init__(
        self,
        decode: Callable[[bytes], F],
        analyse: Callable[[Sequence[F]], Sequence[A]],
        *,
        max_batch: int,
        max_wait_s: float,
        max_queue: int,
        call_timeout_s: float,
        background_slice: int | None = None,
        analyse_hinted: Callable[[Sequence[F], Sequence[Any]], Sequence[A]] | None = None,
    ) -> None:
        self._decode = decode
        self._analyse = analyse
        # Used instead of `analyse` when given: one hint per frame, None where none came.
        self._analyse_hinted = analyse_hinted
        self._max_batch = max_batch
        self._max_wait = max_wait_s
        self._max_queue = max_queue
        self._timeout = call_timeout_s
        # None: a batch's samples run in one go (nothing to gain from slicing on a GPU).
        self._slice = background_slice
        self._pending: deque[_Job] = deque()  # candidates' jobs, in arrival order
        self._background: deque[_Job] = deque()
        self._arrived = asyncio.Event()
        self._held = 0  # frames waiting or running
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="face-model")
        self._loop_task: asyncio.Task[None] | None = None
        self.stats = BatchStats()

    @property
    def held(self) -> int:
        return self._held

    @property
    def max_batch(self) -> int:
        return self._max_batch

    async def submit(
        self,
        image: bytes,
        finish: Callable[[A], Any],
        *,
        background: bool = False,
        hint: Any = None,
    ) -> Any:
        """Analyse one image in the next batch and return `finish(analysis)`."""
        job = _Job(
            1,
            0.0,
            0.0,
            self._future(),
            image=image,
            finish=finish,
            background=background,
            hint=hint,
        )
        return await self._enqueue(job)

    async def run_solo(self, job: Callable[[], Any], cost: int) -> Any:
        """Run `job` alone in the model thread; `cost` frames count against the queue."""
        return await self._enqueue(_Job(cost, 0.0, 0.0, self._future(), solo=job))

    def configure(self, max_batch: int, max_wait_s: float) -> None:
        """Change the batching of the next batches (tuning without a restart)."""
        if not 1 <= max_batch <= self._max_queue or max_wait_s < 0:
            raise InvalidInput(
                f"max_batch must be 1..{self._max_queue} and max_wait_s >= 0.",
                reason="bad_batching",
            )
        self._max_batch, self._max_wait = max_batch, max_wait_s

    def retry_after(self) -> float:
        return max(1.0, math.ceil(self._held * self.stats.seconds_per_frame))

    def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- internals -----------------------------------------------------------------

    def _future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    async def _enqueue(self, job: _Job) -> Any:
        while not job.background and self._background and self._held + job.cost > self._max_queue:
            self._shed(self._background.popleft())
        if self._held + job.cost > self._max_queue:
            self.stats.refused += 1
            raise Unavailable(
                "The face verifier is busy; try again shortly.",
                reason="verifier_busy",
                retry_after=self.retry_after(),
            )
        self._ensure_loop()
        job.enqueued = time.monotonic()
        job.deadline = job.enqueued + self._timeout
        self._held += job.cost
        (self._background if job.background else self._pending).append(job)
        self._arrived.set()
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), self._timeout)
        except TimeoutError:
            raise Unavailable(
                "The face verifier did not answer in time.",
                reason="verifier_timeout",
                retry_after=self.retry_after(),
            ) from None
        finally:
            # Timed out or cancelled: the loop drops the job unless it already runs.
            job.future.cancel()

    def _shed(self, job: _Job) -> None:
        self._held -= job.cost
        self.stats.shed += 1
        if not job.future.done():
            job.future.set_exception(
                Unavailable(
                    "The face verifier is busy with candidates; sample again later.",
                    reason="verifier_busy",
                    retry_after=self.retry_after(),
                )
            )

    def _ensure_loop(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._run_forever())

    async def _run_forever(self) -> None:
        while True:
            batch = self._live(await self._next_batch())
            if batch:
                await self._run_batch(batch)

    async def _run_batch(self, batch: list[_Job]) -> None:
        started = time.perf_counter()
        try:
            outcomes = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._process, batch
            )
        except Exception as exc:  # the executor itself failed: fail the batch, keep the loop
            log.exception("face model batch failed")
            outcomes = [exc] * len(batch)
        elapsed = time.perf_counter() - started
        answered = time.monotonic()
        deferred = [
            job for job, outcome in zip(batch, outcomes, strict=True) if outcome is _DEFERRED
        ]
        self._record([job for job in batch if job not in deferred], elapsed)
        if deferred:
            # Back to the head of their queue, in their order, still held: the candidate's
            # job that stopped them runs first, they run next.
            self.stats.deferred += len(deferred)
            self._background.extendleft(reversed(deferred))
            self._arrived.set()
        for job, outcome in zip(batch, outcomes, strict=True):
            if outcome is _DEFERRED:
                continue
            self._held -= job.cost
            if job.future.done():
                continue
            self.stats.observe_latency(answered - job.enqueued)
            if isinstance(outcome, BaseException):
                job.future.set_exception(outcome)
            else:
                job.future.set_result(outcome)

    async def _next_batch(self) -> list[_Job]:
        while not (self._pending or self._background):
            self._arrived.clear()
            await self._arrived.wait()
        first = (self._pending or self._background).popleft()
        if first.solo is not None:
            return [first]
        batch = [first]
        deadline = time.monotonic() + self._max_wait
        while len(batch) < self._max_batch:
            waiting = self._pending or self._background  # candidates' jobs first
            if waiting:
                if waiting[0].solo is not None:
                    break  # a solo job is next: run what we have first
                batch.append(waiting.popleft())
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break
        # Candidates' jobs first (one may have come while samples filled the batch): the
        # model thread runs them in its first slice.
        return sorted(batch, key=lambda job: job.background)

    def _live(self, batch: list[_Job]) -> list[_Job]:
        """Drop jobs nobody waits for any more, before they cost model time."""
        now = time.monotonic()
        live = []
        for job in batch:
            if job.future.done() or now > job.deadline:
                self._held -= job.cost
                self.stats.dropped += 1
                job.future.cancel()
            else:
                live.append(job)
        return live

    def _record(self, batch: list[_Job], elapsed: float) -> None:
        frames = sum(job.cost for job in batch)
        stats = self.stats
        stats.batches += 1
        stats.frames += frames
        stats.largest_batch = max(stats.largest_batch, len(batch))
        stats.sizes[len(batch)] = stats.sizes.get(len(batch), 0) + 1
        stats.seconds_per_frame = 0.8 * stats.seconds_per_frame + 0.2 * elapsed / max(frames, 1)

    # -- the model thread --------------------------------------------------------------

    def _process(self, batch: list[_Job]) -> list[Any]:
        started = time.thread_time()
        try:
            return self._process_batch(batch)
        finally:
            self.stats.model_cpu_s += time.thread_time() - started

    def _process_batch(self, batch: list[_Job]) -> list[Any]:
        if batch[0].solo is not None:
            return [_guarded(batch[0].solo)]
        outcomes: list[Any] = [_DEFERRED] * len(batch)
        # Candidates' jobs lead a batch. Sliced (CPU), they run as a slice of their own,
        # and are answered before any sample of the batch runs; unsliced (GPU), the whole
        # batch runs at once.
        leading = sum(not job.background for job in batch)
        step = self._slice or len(batch)
        start, end = 0, min(len(batch), (leading or step) if self._slice else len(batch))
        while start < len(batch):
            # Read from this thread while the event loop appends: a deque's length is atomic.
            if start and (leading or self._pending):
                # Candidates' jobs are done and answered now, or one is waiting: the rest
                # of the samples go back, to run next.
                break
            self._process_slice(batch, range(start, end), outcomes)
            start, end = end, min(len(batch), end + step)
        return outcomes

    def _process_slice(self, batch: list[_Job], indices: range, outcomes: list[Any]) -> None:
        frames: list[F] = []
        owners: list[int] = []
        hints: list[Any] = []
        for index in indices:
            job = batch[index]
            assert job.image is not None
            decoded = _guarded(self._decode, job.image)
            if isinstance(decoded, BaseException):
                outcomes[index] = decoded
            else:
                frames.append(decoded)
                owners.append(index)
                hints.append(job.hint)
        if frames:
            hinted = self._analyse_hinted
            analyses = (
                _guarded(self._analyse, frames)
                if hinted is None
                else _guarded(hinted, frames, hints)
            )
            for position, index in enumerate(owners):
                finish = batch[index].finish
                assert finish is not None
                outcomes[index] = (
                    analyses
                    if isinstance(analyses, BaseException)
                    else _guarded(finish, analyses[position])
                )


def _guarded(call: Callable[..., Any], *args: Any) -> Any:
    """The call's result, or the error a caller should see; never raises."""
    try:
        return call(*args)
    except ExamdayError as exc:
        return exc
    except Exception:
        # Bad input is an ExamdayError; anything else is our bug or the model's, and
        # must fail this call only, not the replica.
        log.exception("face model call failed")
        return ExamdayError("The face model failed on this request.", reason="face_model_error")
