"""FaceVerifier: one replica of the face verifier service, models loaded once per lane.

A replica owns a `Batcher` with two lanes, each with its own `FacePipeline` and model
thread: candidates' calls (enrolment, 1:1 verification, a liveness check, which runs
as one job of its own frames) in the join lane at `join_priority`'s niceness, monitoring
samples in the monitoring lane a step below it. Single-image calls are analysed in dynamic
batches. Model work runs in the lanes' threads, never on the actor's event loop, so
the replica keeps answering `load` (and refusing with 503 `verifier_busy` when full)
while a batch runs.

Replicas are created and autoscaled by `actors.face.pool.FaceVerifierPool` and called
through `actors.face.client.VerifierClient`. This module imports torch only inside the
replica process: the pool and the gateway never load the models.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import ray

from actors.face.batcher import Batcher, Lane
from actors.face.results import (
    EnrolOutcome,
    FrameSummary,
    LivenessOutcome,
    VerifyOutcome,
    liveness_outcome,
    summarise,
)
from core.process_services import open_process
from infra.errors import InvalidInput
from infra.priority import Priority
from infra.settings import Settings
from infra.telemetry import traced
from ml.embedding import Reuse
from ml.templates import FaceTemplate

if TYPE_CHECKING:
    from ml.pipeline import FrameAnalysis


@ray.remote(max_restarts=-1, max_task_retries=0)
class FaceVerifier:
    def __init__(self, settings: Settings, name: str) -> None:
        # The process (its event loop, Ray's threads) serves candidates; the monitoring
        # lane's thread moves itself a step below (`actors.face.batcher`).
        joining = Priority.LIVE if settings.verifier.join_priority == "live" else Priority.QUEUED
        sampling = Priority.QUEUED if joining is Priority.LIVE else Priority.BULK
        open_process(settings, "face_verifier", priority=joining)
        import cv2
        import torch

        from ml.pipeline import FacePipeline

        if settings.verifier.torch_threads:
            torch.set_num_threads(settings.verifier.torch_threads)
        # OpenCV sizes its pool to the machine, not to this replica's CPUs: two replicas on
        # two cores would each run two threads beside torch's and fight over the cores.
        cv2.setNumThreads(torch.get_num_threads())
        self.name = name
        self.settings = settings
        self.config = settings.verifier
        # One copy of the models per lane: OpenCV's dnn nets are not safe to share
        # between threads, and a shared lock would make a candidate wait for a sample.
        join = self.pipeline = FacePipeline(settings.face)
        monitoring = FacePipeline(settings.face)
        self.batcher: Batcher[Any, FrameAnalysis] = Batcher(
            Lane(
                join.decode,
                lambda frames, _hints: join.analyse_batch(frames),
                priority=joining,
            ),
            Lane(
                monitoring.decode,
                lambda frames, hints: monitoring.analyse_batch(frames, reuse=hints),
                priority=sampling,
            ),
            max_batch=self.config.max_batch,
            max_wait_s=self.config.max_wait_s,
            max_queue=self.config.max_queue,
            call_timeout_s=self.config.call_timeout_s,
        )

    @traced
    async def ready(self) -> dict[str, Any]:
        model = self.pipeline.model
        return {
            "name": self.name,
            "backend": model.backend,
            "version": model.version,
            "detector": self.pipeline.detector_name,
        }

    @traced
    async def analyse(self, image: bytes, reuse: Reuse | None = None) -> FrameSummary:
        """Every face of one frame (a monitoring sample); `reuse`: what the candidate's last
        sample left (`FrameSummary.reuse`), taken instead of embedding a face unchanged."""
        summary: FrameSummary = await self.batcher.submit(
            image, summarise, background=True, hint=reuse
        )
        return summary

    @traced
    async def enrol(self, image: bytes) -> EnrolOutcome:
        """A template from a photo with exactly one face that passes every quality gate."""
        pipeline = self.pipeline

        def finish(frame: FrameAnalysis) -> EnrolOutcome:
            face = pipeline.single_usable_face(frame)
            template = FaceTemplate(model=frame.model, vector=face.embedding)
            return EnrolOutcome(template.to_bytes(), frame.model, face.quality.face_px)

        outcome: EnrolOutcome = await self.batcher.submit(image, finish)
        return outcome

    @traced
    async def verify(self, template_bytes: bytes, image: bytes) -> VerifyOutcome:
        """1:1: does the one usable face of `image` match the enrolled template?"""
        template = FaceTemplate.from_bytes(template_bytes)
        template.check_compatible(self.pipeline.model)  # before spending any model time
        pipeline = self.pipeline

        def finish(frame: FrameAnalysis) -> VerifyOutcome:
            face = pipeline.single_usable_face(frame)
            score = template.similarity(face.embedding, frame.model)
            threshold = pipeline.threshold
            return VerifyOutcome(score >= threshold, score, threshold, frame.model.backend)

        outcome: VerifyOutcome = await self.batcher.submit(image, finish)
        return outcome

    @traced
    async def liveness(
        self, movement: str, nonce: str, frames: list[bytes], template_bytes: bytes | None
    ) -> LivenessOutcome:
        """Did the frames follow the challenge's movement (and show the enrolled person)?"""
        from ml.liveness import Challenge, LivenessChecker, Movement

        limit = self.settings.face.liveness_max_frames
        if len(frames) > limit:
            raise InvalidInput(
                f"{len(frames)} frames; a liveness check takes at most {limit}.",
                reason="too_many_frames",
            )
        template = FaceTemplate.from_bytes(template_bytes) if template_bytes else None
        if template is not None:
            template.check_compatible(self.pipeline.model)
        challenge = Challenge(movement=Movement(movement), nonce=nonce)
        checker = LivenessChecker(self.pipeline)

        def run() -> LivenessOutcome:
            return liveness_outcome(checker.check(challenge, frames, template))

        cost = max(1, min(len(frames), self.config.max_queue))
        outcome: LivenessOutcome = await self.batcher.run_solo(run, cost)
        return outcome

    @traced
    async def configure(self, max_batch: int, max_wait_s: float) -> None:
        self.batcher.configure(max_batch, max_wait_s)

    @traced
    async def load(self) -> dict[str, Any]:
        """What the pool scales on: frames held, and how fast they go."""
        stats = self.batcher.stats
        return {
            "name": self.name,
            "held": self.batcher.held,
            "batches": stats.batches,
            "frames": stats.frames,
            "dropped": stats.dropped,
            "refused": stats.refused,
            "shed": stats.shed,
            "largest_batch": stats.largest_batch,
            "batch_sizes": dict(stats.sizes),
            "seconds_per_frame": round(stats.seconds_per_frame, 4),
            "latency": stats.latency(),
            "niceness": self.batcher.niceness(),
            "max_batch": self.batcher.max_batch,
            "gpu": self.pipeline.device.type == "cuda",
            "pid": os.getpid(),
            # CPU time of this replica's process: the cost per frame, whatever else runs.
            "cpu_seconds": round(time.process_time(), 3),
            "model_cpu_seconds": round(stats.model_cpu_s, 3),
        }
