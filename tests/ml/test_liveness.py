"""Active liveness on head movements synthesised from a real photo.

The session's pipeline detects with YuNet on a CPU; its liveness checks follow MTCNN's
landmarks placed on a crop around each YuNet face (`FaceSettings.liveness_detector`,
`auto`: `yunet+mtcnn` on a CPU), which these tests hold to.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from infra.errors import InvalidInput
from infra.settings.ml import FaceSettings
from loadtests.synthetic import SWEEP, scaled, turn_head
from ml.images import RGBImage
from ml.liveness import Challenge, LivenessChecker, Movement, new_challenge
from ml.pipeline import FacePipeline
from ml.templates import FaceTemplate


def challenge(movement: Movement) -> Challenge:
    return Challenge(movement=movement, nonce="test-nonce")


@pytest.fixture(scope="module")
def checker(pipeline: FacePipeline) -> LivenessChecker:
    return LivenessChecker(pipeline)


@pytest.fixture(scope="module")
def still(pipeline: FacePipeline, photos: dict[str, RGBImage]) -> RGBImage:
    return scaled(photos["person_b_2"], 0.6)  # a 413x540 frame, about webcam size


def sweep(pipeline: FacePipeline, still: RGBImage, axis: str, sign: int) -> list[RGBImage]:
    (face,) = pipeline.analyse(still).faces
    return [turn_head(still, face.face, sign * angle, axis) for angle in SWEEP]


@pytest.fixture(scope="module")
def turning_left(pipeline: FacePipeline, still: RGBImage) -> list[RGBImage]:
    return sweep(pipeline, still, "yaw", +1)  # nose to the image's right: the person's left


@pytest.fixture(scope="module")
def turning_right(pipeline: FacePipeline, still: RGBImage) -> list[RGBImage]:
    return sweep(pipeline, still, "yaw", -1)


def yaw_track(pipeline: FacePipeline, frames: list[RGBImage]) -> list[float]:
    """The yaw a liveness check sees (its landmarks come from `liveness_detector`)."""
    analyses = pipeline.analyse_batch(frames, liveness=True)
    return [frame.faces[0].quality.pose.yaw for frame in analyses]


def test_challenges_are_random_with_unguessable_nonces() -> None:
    rng = random.Random(1)
    challenges = [new_challenge(rng) for _ in range(30)]
    assert {c.movement for c in challenges} == set(Movement)
    assert len({c.nonce for c in challenges}) == 30
    assert all(len(c.nonce) >= 20 for c in challenges)


def test_the_synthetic_turn_really_turns_the_estimated_head(
    pipeline: FacePipeline,
    settings: FaceSettings,
    turning_left: list[RGBImage],
    turning_right: list[RGBImage],
) -> None:
    left, right = yaw_track(pipeline, turning_left), yaw_track(pipeline, turning_right)
    print("yaw turning left ", [round(v, 1) for v in left])
    print("yaw turning right", [round(v, 1) for v in right])
    assert max(left) - left[0] > settings.liveness_min_turn_deg
    assert min(right) - right[0] < -settings.liveness_min_turn_deg
    assert abs(left[-1] - left[0]) < 1
    assert abs(right[-1] - right[0]) < 1


def test_turning_the_asked_way_passes(
    checker: LivenessChecker,
    turning_left: list[RGBImage],
    turning_right: list[RGBImage],
    settings: FaceSettings,
) -> None:
    for movement, frames in (
        (Movement.TURN_LEFT, turning_left),
        (Movement.TURN_RIGHT, turning_right),
    ):
        result = checker.check(challenge(movement), frames)
        print(movement, result)
        assert result.passed, result
        assert result.excursion > settings.liveness_min_turn_deg
        assert result.min_similarity is not None
        assert result.min_similarity > 0.6


def test_turning_the_other_way_fails(
    checker: LivenessChecker, turning_left: list[RGBImage], turning_right: list[RGBImage]
) -> None:
    assert checker.check(challenge(Movement.TURN_RIGHT), turning_left).reason == "wrong_direction"
    assert checker.check(challenge(Movement.TURN_LEFT), turning_right).reason == "wrong_direction"


def test_mirrored_clients_swap_the_directions(turning_left: list[RGBImage]) -> None:
    mirrored = FacePipeline(FaceSettings(device="cpu", mirrored_frames=True))
    result = LivenessChecker(mirrored).check(challenge(Movement.TURN_RIGHT), turning_left)
    assert result.passed, result


def test_a_turn_that_never_comes_back_fails(
    checker: LivenessChecker, turning_left: list[RGBImage]
) -> None:
    result = checker.check(challenge(Movement.TURN_LEFT), [*turning_left[:4], turning_left[3]])
    assert result.reason == "did_not_return"


def test_a_nod_passes(checker: LivenessChecker, pipeline: FacePipeline, still: RGBImage) -> None:
    frames = sweep(pipeline, still, "pitch", +1)
    result = checker.check(challenge(Movement.NOD), frames)
    print(result)
    assert result.passed, result


def test_a_still_photo_fails(checker: LivenessChecker, still: RGBImage) -> None:
    identical = [still] * 6
    assert checker.check(challenge(Movement.TURN_LEFT), identical).reason == "static_frames"
    # A photo held up to a camera: the same picture under fresh sensor noise every frame.
    rng = np.random.default_rng(3)
    noisy = [
        np.clip(still + rng.normal(0, 4, still.shape), 0, 255).astype(np.uint8) for _ in range(6)
    ]
    for movement in Movement:
        result = checker.check(challenge(movement), noisy)
        assert result.reason == "no_movement", result
        assert abs(result.excursion) < 5


def test_another_face_midway_fails(
    checker: LivenessChecker, turning_left: list[RGBImage], photos: dict[str, RGBImage]
) -> None:
    frames = [*turning_left[:3], scaled(photos["person_a_2"], 0.6), *turning_left[4:]]
    result = checker.check(challenge(Movement.TURN_LEFT), frames)
    assert result.reason == "face_changed"
    assert result.min_similarity is not None
    assert result.min_similarity < 0.363


def test_a_template_of_someone_else_fails(
    checker: LivenessChecker, turning_left: list[RGBImage], templates: dict[str, FaceTemplate]
) -> None:
    own = checker.check(challenge(Movement.TURN_LEFT), turning_left, templates["person_b_1"])
    other = checker.check(challenge(Movement.TURN_LEFT), turning_left, templates["person_a_1"])
    assert own.passed
    assert other.reason == "identity_mismatch"


def test_a_face_too_small_to_follow_fails(
    checker: LivenessChecker, turning_left: list[RGBImage]
) -> None:
    distant = [scaled(frame, 0.2) for frame in turning_left]
    assert checker.check(challenge(Movement.TURN_LEFT), distant).reason == "face_too_small"


def test_the_frame_count_is_bounded(checker: LivenessChecker, still: RGBImage) -> None:
    for frames, reason in (([still] * 2, "too_few_frames"), ([still] * 41, "too_many_frames")):
        with pytest.raises(InvalidInput) as caught:
            checker.check(challenge(Movement.NOD), frames)
        assert caught.value.reason == reason
