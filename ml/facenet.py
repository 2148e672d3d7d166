"""The `facenet` backend: facenet-pytorch's InceptionResnetV1 from a local state dict.

facenet-pytorch downloads its pretrained weights at run time; exam centres may have no
internet, so this backend builds the network with `pretrained=None` and loads the state
dict found at `FaceSettings.facenet_weights` (e.g. the published
`20180402-114759-vggface2.pt`). Its classifier head (`logits.*`) is ignored: only the
512-d embedding is used. Every problem with the file is a `ConfigError` at construction:
not configured, missing, unreadable, or not an InceptionResnetV1 state dict.

Faces are cropped like facenet-pytorch's own `extract_face`: the detector box grown by a
margin, resized to 160x160, standardised to (x - 127.5) / 128.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from facenet_pytorch import InceptionResnetV1

from infra.errors import ConfigError
from ml.detection import DetectedFace
from ml.embedding import AlignedFace, Vectors, normalise
from ml.images import RGBImage

_SIDE = 160


class FacenetEmbedder:
    name = "facenet"
    dim = 512

    def __init__(self, weights: Path | None, device: torch.device, *, margin: float = 0.1) -> None:
        data = _read_weights(weights)
        model = InceptionResnetV1(pretrained=None, classify=False)
        state = _state_dict(data, weights)
        _check_fits(state, model.state_dict(), weights)
        model.load_state_dict(state, strict=True)
        self._model = model.eval().to(device)
        self._device = device
        self._margin = margin
        self.version = hashlib.sha256(data).hexdigest()[:12]

    def align(self, image: RGBImage, face: DetectedFace) -> AlignedFace:
        x1, y1, x2, y2 = face.box
        grow_x, grow_y = (x2 - x1) * self._margin, (y2 - y1) * self._margin
        x1, x2, y1, y2 = x1 - grow_x, x2 + grow_x, y1 - grow_y, y2 + grow_y
        sx, sy = _SIDE / max(x2 - x1, 1.0), _SIDE / max(y2 - y1, 1.0)
        matrix = np.array([[sx, 0.0, -x1 * sx], [0.0, sy, -y1 * sy]], dtype=np.float32)
        crop = cv2.warpAffine(
            image, matrix, (_SIDE, _SIDE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
        )
        return np.asarray(crop, dtype=np.uint8)

    def embed(self, faces: Sequence[AlignedFace]) -> Vectors:
        if not faces:
            return np.empty((0, self.dim), dtype=np.float32)
        batch = torch.from_numpy(np.stack(faces)).to(self._device)
        batch = (batch.permute(0, 3, 1, 2).float() - 127.5) / 128.0
        with torch.inference_mode():
            vectors = self._model(batch).float().cpu().numpy()
        return normalise(vectors, self.name)


def _read_weights(weights: Path | None) -> bytes:
    if weights is None:
        raise ConfigError(
            "face.backend is 'facenet' but face.facenet_weights is not set: point it at a "
            "local InceptionResnetV1 state dict (nothing is downloaded)."
        )
    try:
        return weights.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"face.facenet_weights: {weights} does not exist.") from None
    except OSError as exc:
        raise ConfigError(f"face.facenet_weights: cannot read {weights}: {exc}") from None


def _state_dict(data: bytes, weights: Path | None) -> dict[str, object]:
    try:
        # weights_only: a weights file must never be able to run code when loaded.
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(
            f"face.facenet_weights: {weights} is not a torch state dict file ({exc})."
        ) from None
    if not isinstance(loaded, Mapping):
        raise ConfigError(
            f"face.facenet_weights: {weights} holds a {type(loaded).__name__}, not a state dict."
        )
    return {str(key): value for key, value in loaded.items() if not str(key).startswith("logits.")}


def _check_fits(
    state: Mapping[str, object], expected: Mapping[str, torch.Tensor], weights: Path | None
) -> None:
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    wrong_shape = sorted(
        key
        for key in expected.keys() & state.keys()
        if _shape(state[key]) != tuple(expected[key].shape)
    )
    problems = [
        f"{len(names)} {what} (e.g. {', '.join(names[:3])})"
        for what, names in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("tensors of the wrong shape", wrong_shape),
        )
        if names
    ]
    if problems:
        raise ConfigError(
            f"face.facenet_weights: {weights} is not an InceptionResnetV1 state dict: "
            + "; ".join(problems)
            + "."
        )


def _shape(value: object) -> tuple[int, ...] | None:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None
