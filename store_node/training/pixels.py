"""Pixels -> the embedder's input: RGB in [0, 1], ImageNet-normalised, channels first.

The same arithmetic as ``store_node.face.embedder.FaceEmbedder`` (which keeps it inside its
batch loop), written once here for training so that what the network learns on is exactly what
it will see in recognition: x = (p / 255 - mean) / std per channel, with the ImageNet mean
(0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225) that MobileFaceNet was trained with.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def crops_to_unit(crops: NDArray[np.uint8]) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) float32 in [0, 1] (a fresh, contiguous tensor)."""
    pixels = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2)
    return pixels.float().div(255.0).contiguous()


def normalise(unit: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> the embedder's normalised input, same shape and dtype."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=unit.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=unit.dtype).view(1, 3, 1, 1)
    return (unit - mean) / std


def network_input(crops: NDArray[np.uint8]) -> torch.Tensor:
    """(N, 112, 112, 3) uint8 aligned crops -> (N, 3, 112, 112) normalised float32, as is."""
    return normalise(crops_to_unit(crops))
