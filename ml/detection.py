"""Face detection: frames in, boxes with a probability and five landmarks out.

`Detector` is the interface the pipeline needs; `MTCNNDetector` implements it with
facenet-pytorch's MTCNN, whose weights ship inside its wheel.

Landmark order, in image coordinates: the eye on the image's left, the eye on the image's
right, nose tip, mouth corner on the image's left, mouth corner on the image's right.
For a face looking at an unmirrored camera the image-left eye is the person's right eye,
so this is exactly YuNet's order ("right eye, left eye, nose, right mouth corner, left
mouth corner", named from the person's side) that OpenCV's SFace alignment expects.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np
import torch
from facenet_pytorch import MTCNN
from numpy.typing import NDArray

from infra.settings.ml import FaceSettings
from ml import mtcnn_batched
from ml.images import RGBImage

Landmarks = NDArray[np.float32]


@dataclass(frozen=True, eq=False)
class DetectedFace:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels; may poke outside
    prob: float
    landmarks: Landmarks  # (5, 2), order in the module docstring

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def side(self) -> float:
        """The short side of the box: what the size gate measures."""
        return min(self.width, self.height)


class Detector(Protocol):
    def detect(self, images: Sequence[RGBImage]) -> list[list[DetectedFace]]:
        """Faces of each image, largest first."""
        ...


class MTCNNDetector:
    """MTCNN over batches of frames of any mix of sizes.

    MTCNN only batches frames of one size, so frames are grouped by size (webcam streams
    are uniform, so a batch usually stays one batch). Frames larger than `detect_max_side`
    are detected on a shrunk copy; coordinates are mapped back to the original frame.

    The three nets run channels-last: the same boxes, and on CPU P-net's max-pooling, the
    biggest single cost in NCHW, gets about 3x cheaper (detection 25-45% cheaper per frame,
    and more so in batches; see `loadtests.bench_face_model --stages`). R-net's and O-net's
    inputs are cut out of the whole batch at once (`ml.mtcnn_batched`) rather than one
    candidate box at a time, a per-box cost batching could not amortise.
    """

    def __init__(self, settings: FaceSettings, device: torch.device) -> None:
        self._max_side = settings.detect_max_side
        self._batch_size = settings.detection_batch_size or (32 if device.type == "cuda" else 8)
        self._min_prob = settings.min_detection_prob
        self._min_face_px = settings.mtcnn_min_face_px
        self._mtcnn = MTCNN(
            keep_all=True,
            select_largest=True,
            min_face_size=settings.mtcnn_min_face_px,
            thresholds=list(settings.mtcnn_thresholds),
            device=device,
        )
        self._mtcnn.eval()
        for net in (self._mtcnn.pnet, self._mtcnn.rnet, self._mtcnn.onet):
            net.to(memory_format=torch.channels_last)

    def detect(self, images: Sequence[RGBImage]) -> list[list[DetectedFace]]:
        shrunk = [self._shrink(image) for image in images]
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for index, (frame, _) in enumerate(shrunk):
            # MTCNN's image pyramid is empty (and it crashes) below its minimum face size.
            if min(frame.shape[:2]) >= self._min_face_px:
                groups[frame.shape].append(index)
        results: list[list[DetectedFace]] = [[] for _ in images]
        for indices in groups.values():
            for start in range(0, len(indices), self._batch_size):
                chunk = indices[start : start + self._batch_size]
                batch = np.stack([shrunk[i][0] for i in chunk])
                for i, found in zip(chunk, mtcnn_batched.detect(self._mtcnn, batch), strict=True):
                    results[i] = self._faces(found, shrunk[i][1])
        return results

    def _shrink(self, image: RGBImage) -> tuple[RGBImage, float]:
        height, width = image.shape[:2]
        longest = max(height, width)
        if longest <= self._max_side:
            return np.ascontiguousarray(image), 1.0
        scale = self._max_side / longest
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        return np.asarray(small, dtype=np.uint8), scale

    def _faces(self, found: mtcnn_batched.FrameFaces, scale: float) -> list[DetectedFace]:
        faces = []
        for box, prob, point in zip(found.boxes, found.probs, found.points, strict=True):
            if prob < self._min_prob:
                continue
            x1, y1, x2, y2 = (float(v) / scale for v in box)
            faces.append(
                DetectedFace(
                    box=(x1, y1, x2, y2),
                    prob=float(prob),
                    landmarks=np.ascontiguousarray(point / scale, dtype=np.float32),
                )
            )
        return faces
