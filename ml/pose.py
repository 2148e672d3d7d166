"""Head pose (yaw, pitch, roll in degrees) from the five detector landmarks.

A coarse geometric model, good for gating and for following a movement across frames,
not for absolute angles: the nose tip stands in front of the plane of eyes and mouth, so
turning the head shifts it sideways (yaw) or up/down (pitch) relative to that plane.

Signs, in an unmirrored camera frame:
    yaw > 0    the nose moves to the image's right: the person turns to their own left
    pitch > 0  the nose moves towards the mouth: the person looks down
    roll > 0   the eye line tilts clockwise on screen
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ml.detection import Landmarks

# Average adult face proportions: nose-tip depth in front of the eyes/mouth plane relative
# to the eye distance and to the eye-to-mouth height, and where the nose tip sits between
# eyes and mouth when looking straight (0 = at the eyes, 1 = at the mouth).
_NOSE_DEPTH_PER_EYE_SPAN = 0.55
_NOSE_DEPTH_PER_FACE_HEIGHT = 0.5
_NEUTRAL_NOSE_HEIGHT = 0.55


@dataclass(frozen=True)
class HeadPose:
    yaw: float
    pitch: float
    roll: float


def estimate_pose(landmarks: Landmarks) -> HeadPose:
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    eye_left, eye_right = points[0], points[1]
    roll = math.degrees(math.atan2(eye_right[1] - eye_left[1], eye_right[0] - eye_left[0]))
    # Undo the roll so that yaw is measured along the eye line and pitch across it.
    upright = _rotate(points - (eye_left + eye_right) / 2, -roll)
    eyes = (upright[0] + upright[1]) / 2
    mouth = (upright[3] + upright[4]) / 2
    nose = upright[2]
    eye_span = max(upright[1][0] - upright[0][0], 1e-6)
    face_height = max(mouth[1] - eyes[1], 1e-6)
    midline_x = (eyes[0] + mouth[0]) / 2
    yaw = math.degrees(math.atan2((nose[0] - midline_x) / eye_span, _NOSE_DEPTH_PER_EYE_SPAN))
    nose_height = (nose[1] - eyes[1]) / face_height - _NEUTRAL_NOSE_HEIGHT
    pitch = math.degrees(math.atan2(nose_height, _NOSE_DEPTH_PER_FACE_HEIGHT))
    return HeadPose(yaw=yaw, pitch=pitch, roll=roll)


def _rotate(points: np.ndarray, degrees: float) -> np.ndarray:
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    rotation = np.array([[cos, -sin], [sin, cos]])
    result: np.ndarray = points @ rotation.T
    return result
