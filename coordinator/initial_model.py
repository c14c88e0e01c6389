"""The model a run starts from: the pretrained embedder's weights, as plain tensors.

The coordinator never builds the network: it reads the hash-checked weight file as a
state_dict of tensors and keeps the entries that travel (``loyalnet.model_arrays``), which are
exactly the keys a store's backbone has.
"""

from __future__ import annotations

from pathlib import Path

import torch

from coordinator.errors import CoordinatorError
from loyalnet.assets import MOBILEFACENET_WEIGHTS, asset_path
from loyalnet.model_arrays import sent_state


def pretrained_backbone(home: Path | None = None) -> dict[str, torch.Tensor]:
    """The pretrained MobileFaceNet weights that travel, float32, in the file's order.

    Args:
        home: the shared data folder; None finds it as ``loyalnet.assets.data_home()`` does.

    Raises:
        AssetError: the weight file is missing or altered.
        CoordinatorError: the file does not hold a state_dict of tensors.
    """
    path = asset_path(MOBILEFACENET_WEIGHTS, home)
    # weights_only: a weight file is data, never code to unpickle; saved on GPU, read on CPU.
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        raise CoordinatorError(
            f"{path} does not hold a state_dict of tensors; restore the original weight file."
        )
    return sent_state(state)
