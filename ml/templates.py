"""Face templates: an enrolled identity vector plus the model that produced it.

A template is compared only with vectors of the same backend, model version and
dimension; anything else raises `Conflict(reason="template_mismatch")` (re-enrol with
the current model) instead of producing a meaningless score.

`to_bytes`/`from_bytes` give a compact, versioned binary form (encryption at rest is the
storage layer's job). Layout, little-endian:

    b"EDFT" | format u8 (=1) | len u8, backend utf-8 | len u8, version utf-8 | dim u16
    | dim x float32

Bytes that do not parse raise `MalformedInput(reason="bad_template")`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from infra.errors import Conflict, MalformedInput
from ml.embedding import ModelId, Vectors

_MAGIC = b"EDFT"
_FORMAT = 1


@dataclass(frozen=True, eq=False)
class FaceTemplate:
    model: ModelId
    vector: Vectors  # (dim,), unit length

    def __post_init__(self) -> None:
        vector = np.asarray(self.vector, dtype=np.float32).reshape(-1)
        if vector.shape != (self.model.dim,) or not np.all(np.isfinite(vector)):
            raise MalformedInput(
                f"A {self.model.backend} template needs {self.model.dim} finite numbers.",
                reason="bad_template",
            )
        if abs(float(np.linalg.norm(vector)) - 1.0) > 1e-3:
            raise MalformedInput("A template vector must have unit length.", reason="bad_template")
        vector.setflags(write=False)
        object.__setattr__(self, "vector", vector)

    def check_compatible(self, model: ModelId) -> None:
        if model != self.model:
            raise Conflict(
                f"The template was made by {_describe(self.model)}, the faces by "
                f"{_describe(model)}; they cannot be compared. Enrol again.",
                reason="template_mismatch",
            )

    def similarity(self, vector: NDArray[np.float32], model: ModelId) -> float:
        """Cosine similarity with a unit vector made by `model`."""
        self.check_compatible(model)
        return float(np.dot(self.vector, np.asarray(vector, dtype=np.float32).reshape(-1)))

    def to_bytes(self) -> bytes:
        backend = self.model.backend.encode()
        version = self.model.version.encode()
        header = struct.pack(
            f"<4sBB{len(backend)}sB{len(version)}sH",
            _MAGIC,
            _FORMAT,
            len(backend),
            backend,
            len(version),
            version,
            self.model.dim,
        )
        return header + self.vector.astype("<f4").tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> FaceTemplate:
        try:
            magic, version_format = struct.unpack_from("<4sB", data, 0)
            if magic != _MAGIC or version_format != _FORMAT:
                raise ValueError("unknown magic or format")
            backend, offset = _string(data, 5)
            version, offset = _string(data, offset)
            (dim,) = struct.unpack_from("<H", data, offset)
            offset += 2
            if len(data) != offset + 4 * dim:
                raise ValueError(f"{len(data) - offset} vector bytes for dim {dim}")
            vector = np.frombuffer(data, dtype="<f4", offset=offset).astype(np.float32)
        except (struct.error, ValueError, UnicodeDecodeError) as exc:
            raise MalformedInput(f"Not a face template: {exc}", reason="bad_template") from None
        return cls(model=ModelId(backend=backend, version=version, dim=dim), vector=vector)


def _string(data: bytes, offset: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<B", data, offset)
    raw = data[offset + 1 : offset + 1 + length]
    if len(raw) != length:
        raise ValueError("truncated header")
    return raw.decode(), offset + 1 + length


def _describe(model: ModelId) -> str:
    return f"{model.backend} {model.version} ({model.dim}-d)"
