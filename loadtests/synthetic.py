"""Synthetic face images made from real photos: for the tests and the load tester."""

from __future__ import annotations

import cv2
import numpy as np

from ml.detection import DetectedFace
from ml.images import RGBImage

# Degrees of a synthetic head movement, frame by frame: out to 40 and back, as a liveness
# challenge asks (`turn_head`); the tests, the fleet and the benchmarks all turn this way.
SWEEP = (0, 15, 30, 40, 30, 15, 0)


def side_by_side(left: RGBImage, right: RGBImage) -> RGBImage:
    """Two photos in one frame, padded to the same height."""
    height = max(left.shape[0], right.shape[0])
    padded = [
        cv2.copyMakeBorder(image, 0, height - image.shape[0], 0, 0, cv2.BORDER_REPLICATE)
        for image in (left, right)
    ]
    return np.ascontiguousarray(np.hstack(padded))


def faceless(seed: int = 7, size: tuple[int, int] = (480, 640)) -> RGBImage:
    """A webcam-sized frame of colour gradients and sensor-like noise, with no face."""
    rng = np.random.default_rng(seed)
    height, width = size
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([xs / width * 200, ys / height * 180, (xs + ys) / (width + height) * 120], -1)
    noisy = base + rng.normal(0, 12, size=base.shape)
    frame: RGBImage = np.clip(noisy, 0, 255).astype(np.uint8)
    return frame


def scaled(image: RGBImage, factor: float) -> RGBImage:
    return np.asarray(
        cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA), np.uint8
    )


def blurred(image: RGBImage, sigma: float) -> RGBImage:
    return np.asarray(cv2.GaussianBlur(image, (0, 0), sigma), np.uint8)


def lit(image: RGBImage, factor: float) -> RGBImage:
    brighter: RGBImage = np.clip(image.astype(np.float32) * factor, 0, 255).astype(np.uint8)
    return brighter


def turn_head(image: RGBImage, face: DetectedFace, degrees: float, axis: str = "yaw") -> RGBImage:
    """Rotate a rough depth model of the head (a dome plus a nose) and re-project it.

    Points stand out from the image plane by their depth, so rotating about the vertical
    axis (yaw; positive moves the nose to the image's right) or the horizontal one
    (pitch; positive moves it down) shifts the nose more than the eyes and mouth, as a
    real head turn does. The background has no depth and stays put.
    """
    nose = face.landmarks[2].astype(np.float64)
    width = face.width
    height, frame_width = image.shape[:2]
    ys, xs = np.mgrid[0:height, 0:frame_width].astype(np.float64)
    sine = np.sin(np.radians(degrees))

    def shift(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        dome = ((x - nose[0]) / (0.6 * width)) ** 2 + ((y - nose[1]) / (0.8 * face.height)) ** 2
        depth = 0.3 * width * np.clip(1.0 - dome, 0.0, None)
        near_nose = ((x - nose[0]) ** 2 + (y - nose[1]) ** 2) / (2 * (0.12 * width) ** 2)
        depth = depth + 0.22 * width * np.exp(-near_nose)
        result: np.ndarray = depth * sine
        return result

    # Inverse mapping by fixed-point iteration: where did each output pixel come from?
    source_x, source_y = xs.copy(), ys.copy()
    for _ in range(8):
        if axis == "yaw":
            source_x = xs - shift(source_x, source_y)
        else:
            source_y = ys - shift(source_x, source_y)
    warped = cv2.remap(
        image,
        source_x.astype(np.float32),
        source_y.astype(np.float32),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return np.asarray(warped, dtype=np.uint8)
