"""Active liveness: the server asks for a random head movement, the client films it.

`new_challenge` picks `turn_left`, `turn_right` or `nod` and a nonce; the caller keeps
the challenge server-side (and expires it) and later hands it with the recorded frames
to `LivenessChecker.check`. The check passes only if, in this order of tests:

    static_frames    the frames are not all (nearly) the same picture
    no_face          every frame has a face ...
    multiple_faces   ... and only one
    face_too_small   at least `min_face_px`, or the landmarks are too coarse to follow
    identity_mismatch  the first face matches the template, when one is given
    face_changed     every face is the same person as in the first frame
    no_movement      the head angle moves at least `liveness_min_turn_deg` (yaw) or
    wrong_direction  `liveness_min_nod_deg` (pitch) from the first frame, the way asked,
                     and never as far the other way (turn_*)
    did_not_return   and then comes back at least `liveness_return_fraction` of the way

`turn_left` is the person's own left: the nose moves to the image's right in an
unmirrored frame (set `mirrored_frames` if a client mirrors them). A nod may go down or up.

A failed check is a `LivenessResult` with `passed=False` and that reason; a frame count
outside the configured range is the caller's error: `InvalidInput(reason=
"too_few_frames" | "too_many_frames")`.

Limits: landmarks from a photo bent or turned in front of the camera move too, so this
stops a still picture or a replayed still, not a prepared video or a mask.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from infra.errors import InvalidInput
from ml.images import RGBImage
from ml.pipeline import FaceAnalysis, FacePipeline, ImageInput
from ml.templates import FaceTemplate


class Movement(StrEnum):
    TURN_LEFT = "turn_left"
    TURN_RIGHT = "turn_right"
    NOD = "nod"


@dataclass(frozen=True)
class Challenge:
    movement: Movement
    nonce: str


@dataclass(frozen=True)
class LivenessResult:
    passed: bool
    reason: str  # "passed" or the first failed test, see the module docstring
    movement: Movement
    excursion: float = 0.0  # peak angle change the way asked, degrees
    min_similarity: float | None = None  # lowest similarity of a frame to the first one


def new_challenge(rng: random.Random) -> Challenge:
    # The nonce never comes from `rng`: tests seed it, and a nonce must stay unguessable.
    return Challenge(movement=rng.choice(list(Movement)), nonce=secrets.token_urlsafe(16))


class LivenessChecker:
    def __init__(self, pipeline: FacePipeline) -> None:
        self._pipeline = pipeline
        self._settings = pipeline.settings

    def check(
        self,
        challenge: Challenge,
        frames: Sequence[ImageInput],
        template: FaceTemplate | None = None,
    ) -> LivenessResult:
        self._check_count(len(frames))
        pictures = [f if isinstance(f, np.ndarray) else self._pipeline.decode(f) for f in frames]
        if self._is_static(pictures):
            return LivenessResult(False, "static_frames", challenge.movement)
        analyses = self._pipeline.analyse_batch(pictures, liveness=True)
        for analysis in analyses:
            if len(analysis.faces) != 1:
                reason = "no_face" if not analysis.faces else "multiple_faces"
                return LivenessResult(False, reason, challenge.movement)
        faces = [analysis.faces[0] for analysis in analyses]
        if any(face.face.side < self._settings.min_face_px for face in faces):
            return LivenessResult(False, "face_too_small", challenge.movement)
        return self._judge(challenge.movement, faces, template)

    def _judge(
        self, movement: Movement, faces: list[FaceAnalysis], template: FaceTemplate | None
    ) -> LivenessResult:
        model = self._pipeline.model
        threshold = self._pipeline.threshold
        if template is not None and template.similarity(faces[0].embedding, model) < threshold:
            return LivenessResult(False, "identity_mismatch", movement)
        first = faces[0].embedding
        similarity = min(float(np.dot(first, face.embedding)) for face in faces)
        if similarity < threshold:
            return LivenessResult(False, "face_changed", movement, min_similarity=similarity)
        reason, excursion = self._movement(movement, faces)
        return LivenessResult(reason == "passed", reason, movement, excursion, similarity)

    def _movement(self, movement: Movement, faces: list[FaceAnalysis]) -> tuple[str, float]:
        settings = self._settings
        if movement is Movement.NOD:
            track = [face.quality.pose.pitch for face in faces]
            minimum = settings.liveness_min_nod_deg
            deltas = np.array(track) - track[0]
            sign = 1.0 if deltas.max() >= -deltas.min() else -1.0
        else:
            track = [face.quality.pose.yaw for face in faces]
            minimum = settings.liveness_min_turn_deg
            deltas = np.array(track) - track[0]
            sign = 1.0 if movement is Movement.TURN_LEFT else -1.0
            if settings.mirrored_frames:
                sign = -sign
        directed = sign * deltas
        peak_at = int(np.argmax(directed))
        peak = float(directed[peak_at])
        if movement is not Movement.NOD and float(-directed.min()) >= minimum:
            return "wrong_direction", peak
        if peak < minimum:
            return "no_movement", peak
        back_to = peak * (1.0 - settings.liveness_return_fraction)
        if not np.any(directed[peak_at + 1 :] <= back_to):
            return "did_not_return", peak
        return "passed", peak

    def _is_static(self, pictures: list[RGBImage]) -> bool:
        first = pictures[0]
        limit = self._settings.liveness_static_pixel_delta
        return all(
            picture.shape == first.shape
            and float(np.abs(picture.astype(np.int16) - first).mean()) <= limit
            for picture in pictures[1:]
        )

    def _check_count(self, count: int) -> None:
        settings = self._settings
        if count < settings.liveness_min_frames:
            raise InvalidInput(
                f"{count} frames; a liveness check needs at least {settings.liveness_min_frames}.",
                reason="too_few_frames",
            )
        if count > settings.liveness_max_frames:
            raise InvalidInput(
                f"{count} frames; a liveness check takes at most {settings.liveness_max_frames}.",
                reason="too_many_frames",
            )
