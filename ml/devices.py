"""Which torch device the models run on."""

from __future__ import annotations

from typing import Literal

import torch

from infra.errors import ConfigError


def resolve_device(choice: Literal["auto", "cpu", "cuda"]) -> torch.device:
    """`auto` takes the GPU when there is one; asking for `cuda` without one is a config error."""
    available = torch.cuda.is_available()
    if choice == "cuda" and not available:
        raise ConfigError("face.device is 'cuda' but torch sees no CUDA device.")
    if choice == "cpu" or not available:
        return torch.device("cpu")
    return torch.device("cuda")
