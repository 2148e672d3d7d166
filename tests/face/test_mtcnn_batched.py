"""`ml.mtcnn_batched` finds the faces facenet-pytorch's own MTCNN finds, on real photos,
one frame at a time and in batches."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from facenet_pytorch import MTCNN
from facenet_pytorch.models.utils.detect_face import imresample, pad
from numpy.typing import NDArray

from infra.settings.ml import FaceSettings
from ml import mtcnn_batched
from ml.images import RGBImage
from tests.face.conftest import FACES, photo

STEMS = sorted(path.stem for path in FACES.glob("*.jpg"))


@pytest.fixture(scope="module")
def mtcnn(face_settings: FaceSettings) -> MTCNN:
    # Configured as MTCNNDetector configures it, channels-last nets included.
    net = MTCNN(
        keep_all=True,
        select_largest=True,
        min_face_size=face_settings.mtcnn_min_face_px,
        thresholds=list(face_settings.mtcnn_thresholds),
        device=torch.device("cpu"),
    )
    net.eval()
    for part in (net.pnet, net.rnet, net.onet):
        part.to(memory_format=torch.channels_last)
    return net


def on_canvas(image: RGBImage, width: int, height: int, flip: bool = False) -> RGBImage:
    """The photo scaled into a frame of that size, as a webcam would send it."""
    scale = min(height / image.shape[0], width / image.shape[1])
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    if flip:
        resized = resized[:, ::-1]
    canvas = np.full((height, width, 3), 110, dtype=np.uint8)
    left, top = (width - size[0]) // 2, (height - size[1]) // 2
    canvas[top : top + size[1], left : left + size[0]] = resized
    return canvas


def assert_same_faces(mtcnn: MTCNN, frames: NDArray[np.uint8]) -> int:
    """Ours against `MTCNN.detect` on one batch; the number of faces compared."""
    boxes, probs, points = mtcnn.detect(frames, landmarks=True)
    ours = mtcnn_batched.detect(mtcnn, frames)
    assert len(ours) == len(frames)
    compared = 0
    for theirs_box, theirs_prob, theirs_points, mine in zip(
        boxes, probs, points, ours, strict=True
    ):
        if theirs_box is None:
            assert len(mine.boxes) == 0
            continue
        theirs_box = np.asarray(theirs_box, dtype=np.float32)
        assert mine.boxes.shape == theirs_box.shape
        side = np.minimum(theirs_box[:, 2] - theirs_box[:, 0], theirs_box[:, 3] - theirs_box[:, 1])
        tolerance = np.maximum(2.0, 0.02 * side)[:, None]
        assert np.all(np.abs(mine.boxes - theirs_box) <= tolerance)
        assert np.allclose(mine.probs, np.asarray(theirs_prob, dtype=np.float32), atol=0.02)
        assert np.allclose(mine.points, np.asarray(theirs_points, dtype=np.float32), atol=3.0)
        compared += len(theirs_box)
    return compared


@pytest.mark.parametrize("stem", STEMS)
def test_one_photo_at_a_time_gives_the_same_faces(mtcnn: MTCNN, stem: str) -> None:
    image = photo(stem)
    assert assert_same_faces(mtcnn, image[None]) >= 1


@pytest.mark.parametrize("frame_size", [(320, 240), (640, 480)])
def test_a_batch_of_eight_gives_the_same_faces(mtcnn: MTCNN, frame_size: tuple[int, int]) -> None:
    width, height = frame_size
    images = [photo(stem) for stem in STEMS]
    frames = [on_canvas(image, width, height) for image in images]
    frames.append(on_canvas(images[0], width, height, flip=True))
    # A frame without a face: its list stays empty while the others' are filled.
    frames.append(np.full((height, width, 3), 110, dtype=np.uint8))
    batch = np.stack(frames[:8])
    assert len(batch) == 8
    found = assert_same_faces(mtcnn, batch)
    assert found >= len(STEMS)
    # Each frame's faces, not only the batch's: the frames' order in the batch holds.
    together = mtcnn_batched.detect(mtcnn, batch)
    for frame, in_batch in zip(batch, together, strict=True):
        alone = mtcnn_batched.detect(mtcnn, frame[None])[0]
        assert alone.boxes.shape == in_batch.boxes.shape
        assert np.allclose(alone.boxes, in_batch.boxes, atol=0.5)


def test_crops_equal_the_per_box_resampling() -> None:
    """The summed-area crops are the numbers facenet-pytorch's per-box
    `interpolate(mode="area")` gives, for boxes of every size, partly outside the frame."""
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, (2, 97, 131, 3), dtype=np.uint8)
    imgs = torch.as_tensor(pixels).permute(0, 3, 1, 2).float()
    corners = rng.uniform(-20, 140, (60, 2))
    sides = rng.uniform(3, 90, (60, 1))
    boxes = torch.as_tensor(
        np.hstack([corners, corners + sides, rng.uniform(0, 1, (60, 1))]), dtype=torch.float32
    )
    image_inds = torch.as_tensor(rng.integers(0, 2, 60))
    table = mtcnn_batched._summed_area_table(pixels, torch.device("cpu"))
    for size in (24, 48):
        kept, inds, crops = mtcnn_batched._crops(table, boxes.clone(), image_inds, 131, 97, size)
        y, ey, x, ex = pad(kept.clone(), 131, 97)
        expected = torch.cat(
            [
                imresample(imgs[int(i), :, y[k] - 1 : ey[k], x[k] - 1 : ex[k]][None], (size, size))
                for k, i in enumerate(inds)
            ]
        )
        assert len(kept) > 30
        assert torch.allclose(crops, (expected - 127.5) * 0.0078125, atol=1e-5)
