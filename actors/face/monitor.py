"""FaceMonitor: continuous face monitoring of candidates during the exam.

The media shard samples each candidate's camera every few seconds and calls
`observe(exam_id, room_id, candidate_id, jpeg, wall_time)` on the one detached actor
`examday-face-monitor`. The monitor keeps an `ml.monitor.CandidateMonitor` per candidate
(template loaded from the exam's region once, reloaded when the candidate is enrolled
again), has the frame analysed by the verifier service and, when the library's
hysteresis raises `face_absent`, `multiple_faces` or `identity_mismatch`, stores the
frame that confirmed it as evidence in the exam's region (class `evidence`) and
journals an incident into the candidate's room.

Monitoring is best effort and bounded: a sample is dropped (and counted) when the
verifier is busy, when the candidate has no enrolment, or when it is older than one
already seen; candidates not seen for `monitor_idle_s` are forgotten, and at most
`monitor_max_candidates` are kept (least recently seen go first). No torch here.

Monitoring slows down first (`SamplePacer`): candidates' enrolment, verification and
liveness go ahead of samples in every replica's queue, so under overload it is the
samples that the verifier refuses. Each refusal doubles the interval between two
analysed samples of a candidate (from the media plane's sampling interval up to
`monitor_max_interval_s`), each analysed sample shortens it again by a tenth of the
base: samples that come sooner are skipped (`paced`) before they cost the verifier
anything. `stats()["sample_interval_s"]` is the interval now (0: not stretched); the
pool's status carries these stats (`FaceVerifierPool.status()["monitor"]`), and the
gateway exports them on `GET /metrics/cluster` as
`examday_face_monitor_sample_interval_seconds` and
`examday_face_monitor_interval_stretches_total`.

A sample also costs less when the candidate sits still: the monitor sends each sample with
what the candidate's last one left (`ml.embedding.Reuse`), and the replica takes that
embedding instead of computing it again when the one face barely moved and looks the
same, at most `monitor_reuse_max_age` samples in a row (`stats()["reused"]` counts them).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import ray

from actors.face.client import VerifierClient
from actors.face.pool import MONITOR_NAME
from actors.face.records import FaceRecord
from core import keys
from core.policies import BIOMETRIC_VERSION
from core.process_services import open_process
from core.rooms import RoomCalls
from infra.errors import ExamdayError, Unavailable
from infra.priority import Priority
from infra.settings import Settings
from infra.telemetry import traced
from ml.embedding import Reuse
from ml.monitor import CandidateMonitor, Incident
from ml.templates import FaceTemplate

if TYPE_CHECKING:
    from ml.pipeline import FrameAnalysis

__all__ = ["MONITOR_NAME", "FaceMonitor", "SamplePacer", "get_or_create"]
log = logging.getLogger(__name__)


class SamplePacer:
    """The interval between two analysed samples of one candidate: up on refusals, down on
    answers (multiplicative increase, additive decrease, like TCP's window inverted)."""

    def __init__(self, base_s: float, max_s: float) -> None:
        self.base_s = base_s
        self.max_s = max(base_s, max_s)
        self.interval_s = 0.0  # 0: every sample the media plane sends is analysed
        self.stretches = 0

    def due(self, wall_time: float, last_sent: float) -> bool:
        return wall_time - last_sent >= self.interval_s

    def refused(self) -> None:
        self.stretches += 1
        self.interval_s = min(self.max_s, max(2 * self.base_s, 2 * self.interval_s))

    def answered(self) -> None:
        eased = self.interval_s - self.base_s / 10
        self.interval_s = eased if eased > self.base_s else 0.0


@dataclass
class _Watch:
    monitor: CandidateMonitor
    enrolled_at: float
    samples: int = 0
    last_wall_time: float = float("-inf")
    last_sent: float = float("-inf")  # wall time of the last sample sent to the verifier
    last_seen: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    reuse: Reuse | None = None  # what the last analysed sample left for the next one


@ray.remote(num_cpus=0, resources={"face": 1}, max_restarts=-1, max_task_retries=0)
class FaceMonitor:
    def __init__(self, settings: Settings) -> None:
        self.process = open_process(settings, "face_monitor", priority=Priority.QUEUED)
        self.settings = settings
        self.redis = self.process.redis
        self.regional = self.process.regional
        self.rooms = RoomCalls(settings, self.redis)
        self.verifier = VerifierClient(settings)
        self.watches: OrderedDict[tuple[str, str], _Watch] = OrderedDict()
        self.counts: Counter[str] = Counter()
        self.in_flight = 0  # samples sent to the verifier and not answered yet
        self.pacer = SamplePacer(
            settings.media.sample_interval_s, settings.verifier.monitor_max_interval_s
        )

    @traced
    async def observe(
        self, exam_id: str, room_id: str, candidate_id: str, jpeg: bytes, wall_time: float
    ) -> None:
        """One camera sample of one candidate; raises incidents into the room when due."""
        self.counts["samples"] += 1
        watch = await self._watch(exam_id, candidate_id)
        if watch is None:
            return
        async with watch.lock:
            if wall_time <= watch.last_wall_time:
                self.counts["stale"] += 1
                return
            if not self.pacer.due(wall_time, watch.last_sent):
                self.counts["paced"] += 1  # the verifier is overloaded: skip, never queue
                return
            watch.last_sent = wall_time
            incidents = await self._analyse(watch, jpeg, wall_time)
        for incident in incidents:
            await self._raise(exam_id, room_id, candidate_id, incident, jpeg, wall_time)

    @traced
    async def stats(self) -> dict[str, Any]:
        return {
            "candidates": len(self.watches),
            # 0: not stretched, every sample the media plane sends (each base_interval_s)
            "sample_interval_s": round(self.pacer.interval_s, 3),
            "base_interval_s": self.pacer.base_s,
            "stretches": self.pacer.stretches,
            "in_flight": self.in_flight,
            **self.counts,
        }

    # -- internals -----------------------------------------------------------------

    async def _analyse(self, watch: _Watch, jpeg: bytes, wall_time: float) -> list[Incident]:
        # No more samples on their way than every replica's queue holds: the rest would
        # only be refused, after waiting in the replicas' Ray queues beside candidates' calls.
        config = self.settings.verifier
        if self.in_flight >= config.max_replicas * config.max_queue:
            self.counts["dropped_busy"] += 1
            self.pacer.refused()
            return []
        self.in_flight += 1
        reuse = watch.reuse
        if reuse is not None and reuse.age >= config.monitor_reuse_max_age:
            reuse = None  # embedded afresh now and then, however still the candidate sits
        try:
            frame = await self.verifier.analyse(jpeg, reuse)
        except Unavailable as exc:
            self.counts["dropped_busy"] += 1
            if exc.reason == "verifier_busy":
                self.pacer.refused()
            return []
        except ExamdayError as exc:
            self.counts[f"bad_frame:{exc.reason}"] += 1
            return []
        finally:
            self.in_flight -= 1
        self.pacer.answered()
        watch.reuse = frame.reuse
        if frame.reused:
            self.counts["reused"] += 1
        index = watch.samples
        watch.samples += 1
        watch.last_wall_time = wall_time
        try:
            # A FrameSummary has every attribute observe() reads, without torch behind it.
            return watch.monitor.observe(wall_time, index, cast("FrameAnalysis", frame))
        except ExamdayError as exc:  # a template of another model: enrol again
            self.counts[f"monitor:{exc.reason}"] += 1
            return []

    async def _watch(self, exam_id: str, cid: str) -> _Watch | None:
        """The candidate's watch, or None (counted) when they have no enrolment or no current
        biometric consent: an organiser may enrol a roster photo, but a face is compared
        only with the candidate's own consent to it, read at every sample so that a refusal
        or a withdrawal stops monitoring at once."""
        self._evict()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.face_record_key(exam_id, cid))
            pipe.hget(keys.candidate_key(exam_id, cid), "biometric")
            raw, consent = await pipe.execute()
        record = FaceRecord.parse(raw)
        if record is None or consent != BIOMETRIC_VERSION.encode():
            self.watches.pop((exam_id, cid), None)
            self.counts["not_enrolled" if record is None else "no_biometric_consent"] += 1
            return None
        watch = self.watches.get((exam_id, cid))
        if watch is None or watch.enrolled_at != record.enrolled_at:
            try:
                template = FaceTemplate.from_bytes(
                    await self.regional.get(exam_id, record.template)
                )
            except ExamdayError as exc:
                self.counts[f"template:{exc.reason}"] += 1
                return None
            monitor = CandidateMonitor(
                template, persist_samples=self.settings.face.monitor_persist_samples
            )
            watch = _Watch(monitor, record.enrolled_at)
            self.watches[(exam_id, cid)] = watch
        watch.last_seen = time.monotonic()
        self.watches.move_to_end((exam_id, cid))
        return watch

    def _evict(self) -> None:
        config = self.settings.verifier
        idle_before = time.monotonic() - config.monitor_idle_s
        while self.watches:
            key, oldest = next(iter(self.watches.items()))
            if len(self.watches) < config.monitor_max_candidates and (
                oldest.last_seen >= idle_before
            ):
                return
            del self.watches[key]
            self.counts["evicted"] += 1

    async def _raise(
        self,
        exam_id: str,
        room_id: str,
        cid: str,
        incident: Incident,
        jpeg: bytes,
        wall_time: float,
    ) -> None:
        kind = str(incident.type)
        stored = await self.regional.put(
            exam_id,
            "evidence",
            cid,
            f"monitor-{kind}-{int(wall_time * 1000)}.jpg",
            jpeg,
            content_type="image/jpeg",
        )
        event = {
            "type": "incident",
            "cid": cid,
            "incident": kind,
            "severity": incident.severity,
            "evidence": stored.key,
            "by": "face-monitor",
            "first_seen": incident.first_seen,
            "score": incident.score,
            # Idempotent: a retried append of the same incident journals it once.
            "eid": f"face-{cid}-{kind}-{int(incident.first_seen * 1000)}",
        }
        await self.rooms.append(keys.room_key(exam_id, room_id), event)
        self.counts[f"incident:{kind}"] += 1


def get_or_create(settings: Settings) -> Any:
    """The monitor actor (blocking: call it in a thread)."""
    return FaceMonitor.options(  # type: ignore[attr-defined]
        name=MONITOR_NAME,
        namespace=settings.ray_namespace,
        get_if_exists=True,
        lifetime="detached",
    ).remote(settings)
