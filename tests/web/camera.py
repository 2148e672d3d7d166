"""Chromium's fake camera showing a real face, which the test moves as a candidate would.

Chromium reads `--use-file-for-fake-video-capture` (a Y4M clip) frame by frame from disk
and loops it. Every frame of the clip shows the same picture, rewritten in place when
the "candidate" moves, so what the camera shows does not depend on where the loop is:
the test performs the movement the page asks for when the page starts recording, as a
person would. (A fixed clip cannot do this: a check of `turn_left` fails as soon as the
frames also turn right, and the page's recording starts at a random point of a loop.)

The frames are real photos (tests/fixtures/faces) letterboxed to 640x480, turned by
`loadtests.synthetic.turn_head` (yaw for turns, pitch for a nod).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from infra.settings.ml import FaceSettings
from loadtests.synthetic import SWEEP, turn_head
from ml.detection import DetectedFace
from ml.images import RGBImage
from ml.pipeline import FacePipeline

FACES = Path(__file__).resolve().parents[1] / "fixtures" / "faces"
WIDTH, HEIGHT, FPS = 640, 480, 10
CLIP_FRAMES = 2  # all alike: the loop's phase never shows
POSE_SECONDS = 0.25  # each angle of the sweep is held this long (the page samples at ~7/s)
# `turn_left` is the person's own left: the nose moves to the image's right (positive yaw).
HOW = {"turn_left": ("yaw", +1), "turn_right": ("yaw", -1), "nod": ("pitch", +1)}
HEADER = f"YUV4MPEG2 W{WIDTH} H{HEIGHT} F{FPS}:1 Ip A1:1 C420jpeg\n".encode()


def letterboxed(stem: str) -> RGBImage:
    """A face photo in the middle of a dim 640x480 room."""
    with Image.open(FACES / f"{stem}.jpg") as opened:
        face = opened.convert("RGB")
        face.thumbnail((WIDTH, HEIGHT))
        canvas = Image.new("RGB", (WIDTH, HEIGHT), (48, 52, 60))
        canvas.paste(face, ((WIDTH - face.width) // 2, (HEIGHT - face.height) // 2))
        return np.asarray(canvas, dtype=np.uint8).copy()


def i420(image: RGBImage) -> bytes:
    return bytes(cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420).tobytes())


class FakeCamera:
    """The clip Chromium films from; `show` and `perform` change what it shows."""

    def __init__(self, path: Path, pipeline: FacePipeline) -> None:
        self.path = path
        self._pipeline = pipeline
        self._faces: dict[str, DetectedFace] = {}
        self._stills: dict[str, RGBImage] = {}
        self.person = "person_b_2"
        self._write(i420(self._still(self.person)), create=True)

    @classmethod
    def create(cls, path: Path) -> FakeCamera:
        return cls(path, FacePipeline(FaceSettings(device="cpu")))

    def _still(self, person: str) -> RGBImage:
        if person not in self._stills:
            image = letterboxed(person)
            (found,) = self._pipeline.analyse(image).faces
            self._stills[person], self._faces[person] = image, found.face
        return self._stills[person]

    def _write(self, frame: bytes, create: bool = False) -> None:
        clip = HEADER + b"".join(b"FRAME\n" + frame for _ in range(CLIP_FRAMES))
        # In place, same length: Chromium keeps the file open and reads each frame anew.
        with self.path.open("wb" if create else "r+b") as out:
            out.write(clip)

    async def show(self, person: str) -> None:
        """Someone else sits down in front of the camera (facing it)."""
        frame = await asyncio.to_thread(lambda: i420(self._still(person)))
        self.person = person
        await asyncio.to_thread(self._write, frame)

    async def sweep(self, movement: str) -> list[bytes]:
        """The frames of the person doing `movement` (made ahead: warping takes a while)."""
        axis, sign = HOW[movement]
        still, face = self._still(self.person), self._faces[self.person]

        def made() -> list[bytes]:
            return [i420(turn_head(still, face, sign * angle, axis)) for angle in SWEEP]

        return await asyncio.to_thread(made)

    async def perform(self, sweep: list[bytes]) -> None:
        """The person turns or nods, then faces the camera again."""
        for frame in sweep:
            await asyncio.to_thread(self._write, frame)
            await asyncio.sleep(POSE_SECONDS)
