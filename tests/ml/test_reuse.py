"""Monitoring samples that reuse the last embedding: only for the same face, still.

Real models on the fixture photos, placed as a 320x240 camera would frame them
(`bench_face_model.webcam_frames`), so that different people sit in the same seat.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from infra.settings.ml import FaceSettings
from loadtests.bench_face_model import MONITOR_SIZE, webcam_frames
from loadtests.synthetic import lit
from ml.images import RGBImage, decode_image
from ml.pipeline import FacePipeline


@pytest.fixture(scope="module")
def seats(settings: FaceSettings) -> list[RGBImage]:
    """person_a_1, person_a_2, person_b_1, ... (sorted fixture order), each in one seat."""
    return webcam_frames(settings, MONITOR_SIZE)


def recompressed(image: RGBImage, settings: FaceSettings) -> RGBImage:
    out = io.BytesIO()
    Image.fromarray(image).save(out, "JPEG", quality=70)
    return decode_image(out.getvalue(), settings)


def test_a_still_face_reuses_and_anything_else_embeds_again(
    pipeline: FacePipeline, seats: list[RGBImage], settings: FaceSettings
) -> None:
    first = pipeline.analyse_batch([seats[2]], reuse=[None])[0]
    assert not first.reused
    assert first.reuse is not None
    assert first.reuse.age == 0

    # The next sample of the same still face (the camera's compression differs): reused.
    same = recompressed(seats[2], settings)
    again = pipeline.analyse_batch([same], reuse=[first.reuse])[0]
    assert again.reused
    assert again.reuse is not None
    assert again.reuse.age == 1
    np.testing.assert_array_equal(again.faces[0].embedding, first.faces[0].embedding)
    # What it would have embedded is the same identity: nothing a decision reads moved.
    fresh = pipeline.analyse(same).faces[0].embedding
    assert float(fresh @ first.faces[0].embedding) > 0.95

    # Everyone else in that seat, the same face lit otherwise, several faces, no face:
    # embedded again (or nothing to reuse), in one batch with the hint beside each.
    others = [image for n, image in enumerate(seats) if n != 2]
    darker = lit(seats[2], 0.7)
    both = np.concatenate([seats[2], seats[0]], axis=1)
    empty = np.full_like(seats[2], 110)
    frames = [*others, darker, both, empty]
    results = pipeline.analyse_batch(frames, reuse=[first.reuse] * len(frames))
    assert [r.reused for r in results] == [False] * len(frames)
    for result in results[: len(others)]:
        score = float(result.faces[0].embedding @ first.faces[0].embedding)
        assert score < 0.99, score  # its own embedding, not the hint's
    assert results[-2].reuse is None
    assert len(results[-2].faces) == 2
    assert results[-1].reuse is None
    assert not results[-1].faces


def test_without_hints_nothing_is_reused_or_left(
    pipeline: FacePipeline, seats: list[RGBImage]
) -> None:
    # The join path (enrolment, verification, liveness) never passes hints.
    result = pipeline.analyse_batch([seats[0]])[0]
    assert result.reuse is None
    assert not result.reused
    with pytest.raises(ValueError, match="one reuse hint per image"):
        pipeline.analyse_batch([seats[0]], reuse=[])
