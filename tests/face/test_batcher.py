"""Dynamic batching in front of the real pipeline, in this process (no Ray in between)."""

from __future__ import annotations

import asyncio
import os
import threading

import numpy as np
import pytest

from actors.face.batcher import Batcher, Lane
from actors.face.results import FrameSummary, summarise
from infra.errors import ExamdayError, Unavailable
from infra.priority import Priority
from infra.settings.ml import FaceSettings
from ml.images import RGBImage
from ml.pipeline import FacePipeline, FrameAnalysis
from tests.face.conftest import photo_bytes


@pytest.fixture(scope="module")
def pipeline(face_settings: FaceSettings) -> FacePipeline:
    return FacePipeline(face_settings)


def lanes(
    pipeline: FacePipeline,
) -> tuple[Lane[RGBImage, FrameAnalysis], Lane[RGBImage, FrameAnalysis]]:
    """The join and monitoring lanes at the verifier's priorities, on one pipeline (its
    lock serialises the model calls; `finish` steps still run side by side)."""
    return (
        Lane(pipeline.decode, lambda frames, _: pipeline.analyse_batch(frames), Priority.LIVE),
        Lane(
            pipeline.decode,
            lambda frames, hints: pipeline.analyse_batch(frames, reuse=hints),
            Priority.QUEUED,
        ),
    )


def batcher(pipeline: FacePipeline, **limits: int) -> Batcher[RGBImage, FrameAnalysis]:
    return Batcher(
        *lanes(pipeline),
        max_batch=limits.get("max_batch", 8),
        max_wait_s=0.2,
        max_queue=limits.get("max_queue", 64),
        call_timeout_s=60,
    )


async def test_concurrent_frames_share_one_batch_and_a_bad_one_fails_alone(
    pipeline: FacePipeline,
) -> None:
    batches = batcher(pipeline)
    try:
        images = [photo_bytes(stem) for stem in ("person_a_1", "person_b_1", "impostor_1")]
        results = await asyncio.gather(
            *(batches.submit(image, summarise) for image in images),
            batches.submit(b"not an image at all", summarise),
            return_exceptions=True,
        )
        *good, bad = results
        assert all(isinstance(r, FrameSummary) and len(r.faces) == 1 for r in good), results
        assert isinstance(bad, ExamdayError)
        assert bad.reason == "not_an_image"
        assert (batches.stats.batches, batches.stats.largest_batch) == (1, 4)
        assert batches.held == 0
        # The failed decode was answered too: four latencies, all in one batch's time.
        latency = batches.stats.latency()["join"]
        assert latency["count"] == 4
        assert latency["buckets"][-1] == ("+Inf", 4)
        assert 0 < latency["sum"] < 4 * 60
    finally:
        batches.close()


async def test_a_full_queue_refuses_at_once_with_retry_after(pipeline: FacePipeline) -> None:
    batches = batcher(pipeline, max_batch=2, max_queue=3)
    try:
        image = photo_bytes("person_a_1")
        results = await asyncio.gather(
            *(batches.submit(image, summarise) for _ in range(6)), return_exceptions=True
        )
        refused = [r for r in results if isinstance(r, Unavailable)]
        assert len(refused) == 3
        assert all(r.reason == "verifier_busy" and (r.retry_after or 0) >= 1 for r in refused)
        assert sum(isinstance(r, FrameSummary) for r in results) == 3
        assert batches.stats.refused == 3
        assert batches.held == 0
    finally:
        batches.close()


async def test_batching_is_tuned_without_a_restart(pipeline: FacePipeline) -> None:
    batches = batcher(pipeline, max_batch=8, max_queue=8)
    try:
        batches.configure(max_batch=2, max_wait_s=0.0)
        image = photo_bytes("person_b_1")
        await asyncio.gather(*(batches.submit(image, summarise) for _ in range(4)))
        assert batches.stats.sizes == {2: 2}
        with pytest.raises(ExamdayError) as refused:
            batches.configure(max_batch=9, max_wait_s=0.0)  # more than the queue holds
        assert refused.value.reason == "bad_batching"
    finally:
        batches.close()


async def test_a_candidates_job_sheds_waiting_monitoring_samples_when_the_queue_is_full(
    pipeline: FacePipeline,
) -> None:
    batches = batcher(pipeline, max_batch=2, max_queue=4)
    try:
        image = photo_bytes("person_a_1")

        # Four samples fill the queue; the first batch (two of them) starts at once.
        samples = [
            asyncio.ensure_future(batches.submit(image, summarise, background=True))
            for _ in range(4)
        ]
        await asyncio.sleep(0)
        candidates = [asyncio.ensure_future(batches.submit(image, summarise)) for _ in range(2)]
        results = await asyncio.gather(*samples, *candidates, return_exceptions=True)

        # The candidates' jobs took the two waiting samples' places, oldest first.
        assert all(isinstance(r, FrameSummary) for r in results[:2] + results[4:]), results
        shed = results[2:4]
        assert all(isinstance(r, Unavailable) and r.reason == "verifier_busy" for r in shed)
        assert (batches.stats.shed, batches.stats.refused) == (2, 0)
        assert batches.held == 0

        # With room to spare nothing is shed.
        await asyncio.gather(
            batches.submit(image, summarise, background=True),
            *(batches.submit(image, summarise) for _ in range(3)),
        )
        assert batches.stats.shed == 2
        latency = batches.stats.latency()
        assert (latency["join"]["count"], latency["monitoring"]["count"]) == (5, 3)
    finally:
        batches.close()


async def test_a_candidate_is_answered_while_a_batch_of_samples_runs_and_at_a_higher_priority(
    pipeline: FacePipeline,
) -> None:
    """The join lane: a candidate's job waits for no sample, queued or running, and its
    thread keeps the gateway's niceness while the samples' thread takes a lower one."""
    batches = batcher(pipeline, max_batch=8)
    candidate_done = threading.Event()
    niceness: dict[str, set[int]] = {"candidate": set(), "sample": set()}

    def this_threads_niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    def sample(analysis: FrameAnalysis) -> bool:
        niceness["sample"].add(this_threads_niceness())
        # Hold the batch of samples running until the candidate has been answered (or
        # long enough to say it was not).
        return candidate_done.wait(timeout=20)

    def candidate(analysis: FrameAnalysis) -> str:
        niceness["candidate"].add(this_threads_niceness())
        candidate_done.set()
        return "joined"

    try:
        image = photo_bytes("person_a_1")
        samples = [
            asyncio.ensure_future(batches.submit(image, sample, background=True)) for _ in range(8)
        ]
        await asyncio.sleep(0.3)  # the batch of eight samples is running
        assert batches.stats.batches == 0
        joined = await batches.submit(image, candidate)
        assert joined == "joined"
        # Every sample saw the candidate answered while it ran.
        assert await asyncio.gather(*samples) == [True] * 8
        assert niceness == {"candidate": {int(Priority.LIVE)}, "sample": {int(Priority.QUEUED)}}
        assert batches.niceness() == {"join": Priority.LIVE, "monitoring": Priority.QUEUED}
        assert batches.stats.sizes == {8: 1, 1: 1}
        assert batches.held == 0
    finally:
        batches.close()


async def test_a_samples_reuse_hint_goes_with_its_own_frame_in_a_shared_batch(
    pipeline: FacePipeline,
) -> None:
    batches = batcher(pipeline)
    try:
        sample = photo_bytes("person_a_2")
        first: FrameSummary = await batches.submit(sample, summarise, background=True)
        assert first.reuse is not None
        assert not first.reused
        # The same sample again with its hint, beside a join frame of the same photo (in
        # its own lane) and a sample of someone else given the same hint: only the first
        # reuses it.
        again, join, other = await asyncio.gather(
            batches.submit(sample, summarise, background=True, hint=first.reuse),
            batches.submit(sample, summarise),
            batches.submit(photo_bytes("person_b_1"), summarise, background=True, hint=first.reuse),
        )
        assert batches.stats.sizes == {1: 2, 2: 1}
        assert [again.reused, join.reused, other.reused] == [True, False, False]
        np.testing.assert_array_equal(again.faces[0].embedding, first.reuse.embedding)
    finally:
        batches.close()
