"""SFace rebuilt in torch gives OpenCV's vectors, for one face or a batch of them."""

from __future__ import annotations

import numpy as np

from ml.embedding import AlignedFace
from ml.images import RGBImage
from ml.pipeline import FacePipeline
from ml.sface import CPU_EMBED_CHUNK, MIN_AGREEMENT, SFaceEmbedder


def _aligned(pipeline: FacePipeline, photos: dict[str, RGBImage]) -> list[AlignedFace]:
    embedder = pipeline._embedder
    frames = list(photos.values())
    return [
        embedder.align(frame, faces[0])
        for frame, faces in zip(frames, pipeline._detector.detect(frames), strict=True)
    ]


def test_torch_vectors_match_opencv_on_real_faces_in_any_batch(
    pipeline: FacePipeline, photos: dict[str, RGBImage]
) -> None:
    embedder = pipeline._embedder
    assert isinstance(embedder, SFaceEmbedder)
    assert embedder.batched, f"torch net rejected at load (agreement {embedder.agreement})"
    assert embedder.agreement >= MIN_AGREEMENT
    faces = _aligned(pipeline, photos)
    # More faces than one chunk, so that chunking and the last short chunk are both used.
    many = [faces[i % len(faces)] for i in range(CPU_EMBED_CHUNK + 3)]
    reference = embedder.opencv_features(many)
    batched = embedder.embed(many)
    single = np.concatenate([embedder.embed([face]) for face in many])
    assert batched.shape == (len(many), embedder.dim)
    assert np.all(np.isfinite(batched))
    assert float(np.min(np.sum(batched * reference, axis=1))) > 0.999
    assert float(np.min(np.sum(single * reference, axis=1))) > 0.999
    # Different people stay apart: the vectors are not all one direction.
    assert float(np.min(reference @ reference.T)) < 0.9
