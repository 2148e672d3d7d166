"""Dynamic batching in front of the real pipeline, in this process (no Ray in between)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest

from actors.face.batcher import Batcher
from actors.face.results import FrameSummary, summarise
from infra.errors import ExamdayError, Unavailable
from infra.settings.ml import FaceSettings
from ml.images import RGBImage
from ml.pipeline import FacePipeline, FrameAnalysis
from tests.face.conftest import photo_bytes


@pytest.fixture(scope="module")
def pipeline(face_settings: FaceSettings) -> FacePipeline:
    return FacePipeline(face_settings)


def batcher(pipeline: FacePipeline, **limits: int) -> Batcher[RGBImage, FrameAnalysis]:
    return Batcher(
        pipeline.decode,
        pipeline.analyse_batch,
        max_batch=limits.get("max_batch", 8),
        max_wait_s=0.2,
        max_queue=limits.get("max_queue", 64),
        call_timeout_s=60,
        background_slice=limits.get("background_slice"),
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
        latency = batches.stats.latency()
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


async def test_a_candidates_job_goes_before_monitoring_samples_and_sheds_them_when_full(
    pipeline: FacePipeline,
) -> None:
    batches = batcher(pipeline, max_batch=2, max_queue=4)
    try:
        image = photo_bytes("person_a_1")
        order: list[str] = []

        def finish(name: str) -> Callable[[FrameAnalysis], str]:
            def done(analysis: FrameAnalysis) -> str:
                assert len(analysis.faces) == 1
                order.append(name)
                return name

            return done

        # Four samples fill the queue; the first batch (two of them) starts at once.
        samples = [
            asyncio.ensure_future(batches.submit(image, finish(f"sample-{i}"), background=True))
            for i in range(4)
        ]
        await asyncio.sleep(0)
        candidates = [
            asyncio.ensure_future(batches.submit(image, finish(f"candidate-{i}"))) for i in range(2)
        ]
        results = await asyncio.gather(*samples, *candidates, return_exceptions=True)

        # The candidates' jobs took the two waiting samples' places, oldest first, and
        # ran in the very next batch, before anything that came before them.
        assert results[4:] == ["candidate-0", "candidate-1"]
        assert results[:2] == ["sample-0", "sample-1"]
        shed = results[2:4]
        assert all(isinstance(r, Unavailable) and r.reason == "verifier_busy" for r in shed)
        assert order == ["sample-0", "sample-1", "candidate-0", "candidate-1"]
        assert (batches.stats.shed, batches.stats.refused) == (2, 0)
        assert batches.held == 0

        # With room to spare nothing is shed: samples wait behind candidates and fill
        # what room the candidates leave in a batch.
        order.clear()
        mixed = [batches.submit(image, finish("sample-x"), background=True)]
        mixed += [batches.submit(image, finish(f"candidate-{i}")) for i in range(3)]
        await asyncio.gather(*mixed)
        assert order == ["candidate-0", "candidate-1", "candidate-2", "sample-x"]
        assert batches.stats.shed == 2
    finally:
        batches.close()


async def test_a_candidate_waits_for_one_slice_of_a_running_batch_of_samples_not_all_of_it(
    pipeline: FacePipeline,
) -> None:
    batches = batcher(pipeline, max_batch=8, background_slice=2)
    loop = asyncio.get_running_loop()
    try:
        image = photo_bytes("person_a_1")
        order: list[str] = []
        joined: list[asyncio.Future[str]] = []

        async def join() -> None:
            joined.append(asyncio.ensure_future(batches.submit(image, finish("candidate"))))
            await asyncio.sleep(0)  # the job is queued once this returns

        def finish(name: str) -> Callable[[FrameAnalysis], str]:
            def done(analysis: FrameAnalysis) -> str:
                order.append(name)
                if name == "sample-0":
                    # The batch of eight samples is running: a candidate's job comes now.
                    asyncio.run_coroutine_threadsafe(join(), loop).result(timeout=30)
                return name

            return done

        samples = [
            asyncio.ensure_future(batches.submit(image, finish(f"sample-{i}"), background=True))
            for i in range(8)
        ]
        results = await asyncio.gather(*samples)
        assert await joined[0] == "candidate"
        assert results == [f"sample-{i}" for i in range(8)]
        # The candidate went right after the slice that was running (samples 0 and 1); the
        # six samples not started went back to the head of their queue, in their order.
        # The next batch (the candidate and those six) ran the candidate alone, answered
        # it, and put the six back again.
        assert order == ["sample-0", "sample-1", "candidate", *(f"sample-{i}" for i in range(2, 8))]
        assert batches.stats.deferred == 6 + 6
        assert batches.stats.sizes == {2: 1, 1: 1, 6: 1}
        assert batches.stats.frames == 9
        assert batches.held == 0
    finally:
        batches.close()


async def test_a_samples_reuse_hint_goes_with_its_own_frame_in_a_shared_batch(
    pipeline: FacePipeline,
) -> None:
    batches = Batcher(
        pipeline.decode,
        pipeline.analyse_batch,
        max_batch=8,
        max_wait_s=0.2,
        max_queue=64,
        call_timeout_s=60,
        analyse_hinted=lambda frames, hints: pipeline.analyse_batch(frames, reuse=hints),
    )
    try:
        sample = photo_bytes("person_a_2")
        first: FrameSummary = await batches.submit(sample, summarise, background=True)
        assert first.reuse is not None
        assert not first.reused
        # The same sample again with its hint, beside a join frame of the same photo and a
        # sample of someone else given the same hint: only the first reuses it.
        again, join, other = await asyncio.gather(
            batches.submit(sample, summarise, background=True, hint=first.reuse),
            batches.submit(sample, summarise),
            batches.submit(photo_bytes("person_b_1"), summarise, background=True, hint=first.reuse),
        )
        assert batches.stats.largest_batch == 3
        assert [again.reused, join.reused, other.reused] == [True, False, False]
        np.testing.assert_array_equal(again.faces[0].embedding, first.reuse.embedding)
    finally:
        batches.close()
