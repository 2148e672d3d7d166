"""Quality gates on real photos degraded the way webcams degrade them."""

from __future__ import annotations

import numpy as np
import pytest

from infra.errors import InvalidInput
from infra.settings.ml import FaceSettings
from loadtests.synthetic import blurred, lit, scaled
from ml.images import RGBImage
from ml.pipeline import FacePipeline
from ml.pose import estimate_pose


def refusal(pipeline: FacePipeline, frame: RGBImage) -> InvalidInput:
    (_face,) = pipeline.analyse(frame).faces  # the face is still found: only its quality fails
    with pytest.raises(InvalidInput) as caught:
        pipeline.enrol(frame)
    print(f"{caught.value.reason}: {caught.value.detail}")
    return caught.value


def test_every_fixture_photo_passes_every_gate(
    pipeline: FacePipeline, photos: dict[str, RGBImage]
) -> None:
    for stem, frame in zip(photos, pipeline.analyse_batch(list(photos.values())), strict=True):
        (face,) = frame.faces
        assert face.quality.ok, (stem, face.quality.failures)


def test_a_heavily_blurred_face_is_too_blurry(
    pipeline: FacePipeline, photos: dict[str, RGBImage], settings: FaceSettings
) -> None:
    error = refusal(pipeline, blurred(photos["person_b_1"], sigma=8))
    assert error.reason == "too_blurry"
    assert error.extra["measured"] < error.extra["limit"] == settings.min_sharpness


def test_a_tiny_face_is_too_small(
    pipeline: FacePipeline, photos: dict[str, RGBImage], settings: FaceSettings
) -> None:
    error = refusal(pipeline, scaled(photos["person_b_1"], 0.15))
    assert error.reason == "face_too_small"
    assert error.extra["measured"] < error.extra["limit"] == settings.min_face_px


def test_a_very_dark_face_is_too_dark(
    pipeline: FacePipeline, photos: dict[str, RGBImage], settings: FaceSettings
) -> None:
    error = refusal(pipeline, lit(photos["person_b_1"], 0.15))
    assert error.reason == "too_dark"
    assert error.extra["measured"] < error.extra["limit"] == settings.min_brightness


def test_an_overexposed_face_is_too_bright(
    pipeline: FacePipeline, photos: dict[str, RGBImage], settings: FaceSettings
) -> None:
    error = refusal(pipeline, lit(photos["person_a_2"], 2.2))
    assert error.reason == "too_bright"
    assert error.extra["measured"] > error.extra["limit"] == settings.max_brightness


def test_a_turned_head_fails_a_strict_pose_gate(photos: dict[str, RGBImage]) -> None:
    # person_a_2 looks slightly to the side: fine by default, not under a 10 degree limit.
    strict = FacePipeline(FaceSettings(device="cpu", max_yaw_deg=10.0))
    error = refusal(strict, photos["person_a_2"])
    assert error.reason == "bad_pose"
    assert abs(error.extra["measured"]) > error.extra["limit"] == 10.0


def test_pose_signs_follow_the_documented_convention() -> None:
    frontal = np.array([[40, 50], [80, 50], [60, 72], [45, 95], [75, 95]], dtype=np.float32)
    straight = estimate_pose(frontal)
    assert abs(straight.yaw) < 1
    assert abs(straight.roll) < 1
    nose_right = frontal.copy()
    nose_right[2, 0] += 10
    assert estimate_pose(nose_right).yaw > 20
    nose_down = frontal.copy()
    nose_down[2, 1] += 8
    assert estimate_pose(nose_down).pitch > straight.pitch + 10
    tilted = frontal.copy()
    tilted[1, 1] += 20  # the image-right eye lower: clockwise on screen
    assert estimate_pose(tilted).roll > 20
