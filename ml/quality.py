"""Quality gates: is a detected face good enough to enrol or verify against?

Gates, in the order they are reported (each failure is `InvalidInput` with this reason,
and `gate`, `measured`, `limit` in the error's extra fields):

    face_too_small  short side of the detector box, px        < min_face_px
    too_dark        mean luma (BT.601) of the face crop        < min_brightness
    too_bright      mean luma of the face crop                 > max_brightness
    too_blurry      variance of the Laplacian of the face crop < min_sharpness
    bad_pose        |yaw|, |pitch| or |roll|, degrees          > max_*_deg

Order matters: a tiny face is also blurry, and a dark face has little contrast and so a
low Laplacian variance, so the more basic cause is reported first.

Blur and brightness are measured on the face box scaled to 112x112 px, the size the
embedder sees, so the sharpness figure does not depend on how large the face was.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from infra.errors import InvalidInput
from infra.settings.ml import FaceSettings
from ml.detection import DetectedFace
from ml.images import RGBImage
from ml.pose import HeadPose, estimate_pose

_CROP_SIDE = 112


@dataclass(frozen=True)
class GateFailure:
    gate: str  # the reason code
    measured: float
    limit: float

    def describe(self) -> str:
        return f"{self.gate}: measured {self.measured:.1f}, limit {self.limit:.1f}"


@dataclass(frozen=True)
class QualityReport:
    face_px: float
    brightness: float
    sharpness: float
    pose: HeadPose
    failures: tuple[GateFailure, ...]

    @property
    def ok(self) -> bool:
        return not self.failures

    def raise_for_failure(self) -> None:
        """Raise `InvalidInput` for the first failing gate; return if every gate passed."""
        if self.ok:
            return
        first = self.failures[0]
        raise InvalidInput(
            f"The face is not usable ({first.describe()}).",
            reason=first.gate,
            gate=first.gate,
            measured=round(first.measured, 2),
            limit=first.limit,
        )


def assess_quality(image: RGBImage, face: DetectedFace, settings: FaceSettings) -> QualityReport:
    grey = _face_crop_grey(image, face)
    brightness = float(grey.mean())
    sharpness = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    pose = estimate_pose(face.landmarks)
    checks = (
        ("face_too_small", face.side, settings.min_face_px, face.side < settings.min_face_px),
        ("too_dark", brightness, settings.min_brightness, brightness < settings.min_brightness),
        ("too_bright", brightness, settings.max_brightness, brightness > settings.max_brightness),
        ("too_blurry", sharpness, settings.min_sharpness, sharpness < settings.min_sharpness),
        *_pose_checks(pose, settings),
    )
    failures = tuple(
        GateFailure(gate=gate, measured=float(measured), limit=float(limit))
        for gate, measured, limit, failed in checks
        if failed
    )
    return QualityReport(
        face_px=face.side,
        brightness=brightness,
        sharpness=sharpness,
        pose=pose,
        failures=failures,
    )


def _pose_checks(
    pose: HeadPose, settings: FaceSettings
) -> tuple[tuple[str, float, float, bool], ...]:
    limits = (
        (pose.yaw, settings.max_yaw_deg),
        (pose.pitch, settings.max_pitch_deg),
        (pose.roll, settings.max_roll_deg),
    )
    return tuple(("bad_pose", angle, limit, abs(angle) > limit) for angle, limit in limits)


def _face_crop_grey(image: RGBImage, face: DetectedFace) -> np.ndarray:
    height, width = image.shape[:2]
    x1, y1, x2, y2 = face.box
    left, top = min(max(int(x1), 0), width - 1), min(max(int(y1), 0), height - 1)
    right, bottom = max(min(round(x2), width), left + 1), max(min(round(y2), height), top + 1)
    crop = image[top:bottom, left:right]
    # INTER_AREA when shrinking: plain sampling would alias and read as extra sharpness.
    shrinking = crop.shape[0] > _CROP_SIDE or crop.shape[1] > _CROP_SIDE
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    resized = cv2.resize(crop, (_CROP_SIDE, _CROP_SIDE), interpolation=interpolation)
    grey: np.ndarray = cv2.cvtColor(resized, cv2.COLOR_RGB2GRAY)
    return grey
