"""Dynamic batching in front of one model: frames from many callers, one model call at a time.

Callers `submit` one image with a `finish` step (enrol, verify, summarise) or a `solo`
job that runs alone (a liveness check analyses its own frames as one batch). A loop on
the event loop takes the next batch as soon as the model is free: up to `max_batch`
single-image jobs, waiting at most `max_wait_s` for the batch to fill when fewer are
queued. Decoding, the model and every `finish` run in a worker thread, never on the
event loop; each image is decoded on its own, so one bad upload fails only its caller.

Two lanes, join first: a candidate waits on enrolment, verification and liveness; a
monitoring sample (`background=True`) waits on nobody, and the next one comes a few
seconds later. Each lane has its own queue, its own model thread and its own copy of
the model (OpenCV's `dnn` nets are not safe to share between threads), and its own
niceness (`Lane.priority`; the verifier puts the monitoring lane a step below the join
lane). So a candidate's job never waits behind a sample in a queue or a batch, and
when the two lanes compete for a core the kernel favours the join. How the join lane
stands against the rest of a saturated node (a gateway in a login storm) is the
verifier's `join_priority`: on a 2-core box at the gateway's niceness the checks were
answered in 20 s instead of 2 minutes, and the login storm broke (docs/capacity.md).

Back-pressure: the batcher holds at most `max_queue` frames (waiting plus running,
both lanes); beyond that `submit` raises `Unavailable(reason="verifier_busy")` at once,
with a Retry-After from the measured time per frame. A candidate's job that finds the
queue full sheds the oldest waiting samples (each answered `verifier_busy`) before it
is refused itself. A job whose caller has given up (`deadline` passed, or its future
cancelled) is dropped before it costs model time.

Every answered job's latency, from `submit` to its result, is counted per lane in
fixed buckets (`LATENCY_BUCKETS_S`): cheap to keep, and summable across replicas and
scrapes, which a moving average or a percentile is not.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from infra.errors import ExamdayError, InvalidInput, Unavailable
from infra.priority import Priority, adopt_thread_priority

log = logging.getLogger(__name__)

F = TypeVar("F")  # a decoded frame
A = TypeVar("A")  # the model's analysis of one frame

LaneName = Literal["join", "monitoring"]
LANES: tuple[LaneName, ...] = ("join", "monitoring")

# Upper bounds in seconds; batching waits milliseconds, a CPU batch of 32 takes seconds,
# and nothing is answered after `call_timeout_s` (30 s by default).
LATENCY_BUCKETS_S = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True, eq=False)
class Lane(Generic[F, A]):
    """What one model thread runs with: its own copy of the model, and its niceness.

    `analyse` takes a batch of frames and one hint per frame (None where none came;
    monitoring's reuse of a candidate's last sample). `priority` None leaves the thread
    at the niceness of the thread that starts it.
    """

    decode: Callable[[bytes], F]
    analyse: Callable[[Sequence[F], Sequence[Any]], Sequence[A]]
    priority: Priority | None = None


@dataclass(eq=False)
class _Job:
    cost: int
    deadline: float
    enqueued: float
    future: asyncio.Future[Any]
    image: bytes | None = None  # a single-image job, merged into batches
    finish: Callable[[Any], Any] | None = None
    solo: Callable[[], Any] | None = None  # a job that runs alone
    background: bool = False  # nobody waits on it: the monitoring lane
    hint: Any = None  # passed to the lane's `analyse` beside the frame (monitoring's reuse)


def _latency_counts() -> list[int]:
    # Answered jobs per latency bucket (the last one: above every bound).
    return [0] * (len(LATENCY_BUCKETS_S) + 1)


@dataclass
class BatchStats:
    batches: int = 0
    frames: int = 0
    dropped: int = 0
    refused: int = 0
    shed: int = 0  # background samples answered busy to make room for a candidate's job
    largest_batch: int = 0
    seconds_per_frame: float = 0.1  # moving average, seeded with a CPU-ish guess
    sizes: dict[int, int] = field(default_factory=dict)
    latency_counts: dict[LaneName, list[int]] = field(
        default_factory=lambda: {lane: _latency_counts() for lane in LANES}
    )
    latency_sum_s: dict[LaneName, float] = field(default_factory=lambda: dict.fromkeys(LANES, 0.0))
    # CPU time of the model threads (decode, model, finish); with one torch thread the
    # rest of the process's CPU time is serving (Ray calls, pickling, the event loop).
    model_cpu_s: float = 0.0

    def observe_latency(self, lane: LaneName, seconds: float) -> None:
        self.latency_counts[lane][bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.latency_sum_s[lane] += seconds

    def latency(self) -> dict[LaneName, dict[str, Any]]:
        """Per lane, cumulative counts per upper bound, Prometheus style ("+Inf" is every job)."""
        bounds = [*map(str, LATENCY_BUCKETS_S), "+Inf"]
        lanes: dict[LaneName, dict[str, Any]] = {}
        for lane in LANES:
            buckets: list[tuple[str, int]] = []
            total = 0
            for bound, count in zip(bounds, self.latency_counts[lane], strict=True):
                total += count
                buckets.append((bound, total))
            lanes[lane] = {
                "buckets": buckets,
                "count": total,
                "sum": round(self.latency_sum_s[lane], 6),
            }
        return lanes


class _LaneRunner(Generic[F, A]):
    """A lane's queue, its model thread and the loop that feeds that thread batches."""

    def __init__(self, name: LaneName, lane: Lane[F, A]) -> None:
        self.name = name
        self.lane = lane
        self.queue: deque[_Job] = deque()
        self.arrived = asyncio.Event()
        self.executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"face-{name}", initializer=self._started
        )
        self.task: asyncio.Task[None] | None = None
        self._thread_id: int | None = None  # the model thread's, once it has started

    def niceness(self) -> int | None:
        """The model thread's niceness now (None before its first job)."""
        if self._thread_id is None:
            return None
        try:
            return os.getpriority(os.PRIO_PROCESS, self._thread_id)
        except ProcessLookupError:  # the executor has shut down
            return None

    def _started(self) -> None:
        self._thread_id = threading.get_native_id()
        if self.lane.priority is not None:
            adopt_thread_priority(self.lane.priority)

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)


class Batcher(Generic[F, A]):
    def __init__(
        self,
        join: Lane[F, A],
        monitoring: Lane[F, A],
        *,
        max_batch: int,
        max_wait_s: float,
        max_queue: int,
        call_timeout_s: float,
    ) -> None:
        self._max_batch = max_batch
        self._max_wait = max_wait_s
        self._max_queue = max_queue
        self._timeout = call_timeout_s
        self._join = _LaneRunner("join", join)
        self._monitoring = _LaneRunner("monitoring", monitoring)
        self._held = 0  # frames waiting or running, both lanes
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
        """Analyse one image in the next batch of its lane and return `finish(analysis)`."""
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
        """Run `job` alone in the join lane's thread; `cost` frames count against the queue."""
        return await self._enqueue(_Job(cost, 0.0, 0.0, self._future(), solo=job))

    def configure(self, max_batch: int, max_wait_s: float) -> None:
        """Change the batching of the next batches (tuning without a restart)."""
        if not 1 <= max_batch <= self._max_queue or max_wait_s < 0:
            raise InvalidInput(
                f"max_batch must be 1..{self._max_queue} and max_wait_s >= 0.",
                reason="bad_batching",
            )
        self._max_batch, self._max_wait = max_batch, max_wait_s

    def niceness(self) -> dict[LaneName, int | None]:
        """Each lane's model thread's niceness: where `Lane.priority` took, and where a node
        without CAP_SYS_NICE kept it higher (None: the lane has not run a job yet)."""
        return {"join": self._join.niceness(), "monitoring": self._monitoring.niceness()}

    def retry_after(self) -> float:
        return max(1.0, math.ceil(self._held * self.stats.seconds_per_frame))

    def close(self) -> None:
        self._join.close()
        self._monitoring.close()

    # -- internals -----------------------------------------------------------------

    def _future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    async def _enqueue(self, job: _Job) -> Any:
        samples = self._monitoring.queue
        while not job.background and samples and self._held + job.cost > self._max_queue:
            self._shed(samples.popleft())
        if self._held + job.cost > self._max_queue:
            self.stats.refused += 1
            raise Unavailable(
                "The face verifier is busy; try again shortly.",
                reason="verifier_busy",
                retry_after=self.retry_after(),
            )
        runner = self._monitoring if job.background else self._join
        self._ensure_loop(runner)
        job.enqueued = time.monotonic()
        job.deadline = job.enqueued + self._timeout
        self._held += job.cost
        runner.queue.append(job)
        runner.arrived.set()
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

    def _ensure_loop(self, runner: _LaneRunner[F, A]) -> None:
        if runner.task is None or runner.task.done():
            runner.task = asyncio.get_running_loop().create_task(self._run_forever(runner))

    async def _run_forever(self, runner: _LaneRunner[F, A]) -> None:
        while True:
            batch = self._live(await self._next_batch(runner))
            if batch:
                await self._run_batch(runner, batch)

    async def _run_batch(self, runner: _LaneRunner[F, A], batch: list[_Job]) -> None:
        started = time.perf_counter()
        try:
            outcomes, cpu_s = await asyncio.get_running_loop().run_in_executor(
                runner.executor, self._process, runner.lane, batch
            )
            self.stats.model_cpu_s += cpu_s
        except Exception as exc:  # the executor itself failed: fail the batch, keep the loop
            log.exception("face model batch failed")
            outcomes = [exc] * len(batch)
        self._record(batch, time.perf_counter() - started)
        answered = time.monotonic()
        for job, outcome in zip(batch, outcomes, strict=True):
            self._held -= job.cost
            if job.future.done():
                continue
            self.stats.observe_latency(runner.name, answered - job.enqueued)
            if isinstance(outcome, BaseException):
                job.future.set_exception(outcome)
            else:
                job.future.set_result(outcome)

    async def _next_batch(self, runner: _LaneRunner[F, A]) -> list[_Job]:
        waiting = runner.queue
        while not waiting:
            runner.arrived.clear()
            await runner.arrived.wait()
        first = waiting.popleft()
        if first.solo is not None:
            return [first]
        batch = [first]
        deadline = time.monotonic() + self._max_wait
        while len(batch) < self._max_batch:
            if waiting:
                if waiting[0].solo is not None:
                    break  # a solo job is next: run what we have first
                batch.append(waiting.popleft())
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            runner.arrived.clear()
            try:
                await asyncio.wait_for(runner.arrived.wait(), remaining)
            except TimeoutError:
                break
        return batch

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

    # -- a model thread ----------------------------------------------------------------

    @staticmethod
    def _process(lane: Lane[F, A], batch: list[_Job]) -> tuple[list[Any], float]:
        """The batch's outcomes, and the CPU time this thread spent on them."""
        started = time.thread_time()
        if batch[0].solo is not None:
            outcomes = [_guarded(batch[0].solo)]
        else:
            outcomes = _analyse_batch(lane, batch)
        return outcomes, time.thread_time() - started


def _analyse_batch(lane: Lane[F, A], batch: list[_Job]) -> list[Any]:
    outcomes: list[Any] = [None] * len(batch)
    frames: list[F] = []
    owners: list[int] = []
    hints: list[Any] = []
    for index, job in enumerate(batch):
        assert job.image is not None
        decoded = _guarded(lane.decode, job.image)
        if isinstance(decoded, BaseException):
            outcomes[index] = decoded
        else:
            frames.append(decoded)
            owners.append(index)
            hints.append(job.hint)
    if frames:
        analyses = _guarded(lane.analyse, frames, hints)
        for position, index in enumerate(owners):
            finish = batch[index].finish
            assert finish is not None
            outcomes[index] = (
                analyses
                if isinstance(analyses, BaseException)
                else _guarded(finish, analyses[position])
            )
    return outcomes


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
