"""CosFace: a large margin cosine loss head with one weight row per member of the store.

Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face Recognition", CVPR 2018. With
x the embedding of a face of class y and W_j the row of class j, both L2-normalised so that
cos theta_j = W_j . x / (|W_j| |x|), the logits are

    z_y = s (cos theta_y - m)      for the true class,
    z_j = s  cos theta_j            for every other class j,

and the loss is the softmax cross-entropy of z. The margin m (0.35 in the paper) asks the true
class to win by a cosine gap of m, which tightens each member's cluster; the scale s (30 to 64
in the paper; 30 here suits a few dozen classes) sets the softmax temperature so the loss can
approach 0 on normalised features.

The rows are the store's secret: they are kept sealed in the store's gallery between rounds
and never sent. A fresh row starts at the member's mean embedding under the current backbone
(``mean_embeddings``), the direction the loss would pull it to anyway, so the first steps train
the backbone on sensible logits instead of on random class directions.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from store_node.face.mobilefacenet import EMBEDDING_DIM
from store_node.training.errors import TrainingError
from store_node.training.pixels import network_input


class CosFaceHead(nn.Module):
    """Margin-softmax classifier over a store's members.

    Args:
        rows: (M, 128) initial class rows, one per member, M >= 1; any norm (they are
            normalised in every forward pass), stored as the parameter ``weight``.
        scale: s > 0, the logit scale.
        margin: m in [0, 1), the cosine margin subtracted from the true class.
    """

    def __init__(self, rows: torch.Tensor, *, scale: float = 30.0, margin: float = 0.35) -> None:
        super().__init__()
        if rows.ndim != 2 or rows.shape[0] < 1 or rows.shape[1] != EMBEDDING_DIM:
            raise TrainingError(
                f"class rows must have shape (members, {EMBEDDING_DIM}), got {tuple(rows.shape)}."
            )
        if not torch.isfinite(rows).all() or bool((rows.norm(dim=1) == 0).any()):
            raise TrainingError("class rows must be finite and non-zero; re-initialise them.")
        if scale <= 0 or not 0.0 <= margin < 1.0:
            raise TrainingError(
                f"CosFace needs scale > 0 and margin in [0, 1), got {scale}, {margin}."
            )
        self.scale = scale
        self.margin = margin
        self.weight = nn.Parameter(rows.detach().clone().float())

    @property
    def num_members(self) -> int:
        return int(self.weight.shape[0])

    def cosines(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(N, 128) raw embeddings -> (N, M) cosine similarities with every class row."""
        return F.normalize(embeddings, dim=1) @ F.normalize(self.weight, dim=1).T

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(N, M) CosFace logits of (N, 128) raw embeddings whose classes are ``labels`` (N,)."""
        cosines = self.cosines(embeddings)
        margins = F.one_hot(labels, self.num_members).to(cosines.dtype) * self.margin
        return self.scale * (cosines - margins)

    def loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The mean large margin cosine loss of a batch (a scalar, >= 0)."""
        return F.cross_entropy(self(embeddings, labels), labels)

    def rows(self) -> NDArray[np.float32]:
        """(M, 128) float32 copy of the class rows, L2-normalised (the form that is stored)."""
        with torch.no_grad():
            unit = F.normalize(self.weight, dim=1)
        return unit.numpy().astype(np.float32, copy=True)


def mean_embeddings(
    network: nn.Module,
    crops: NDArray[np.uint8],
    labels: NDArray[np.int64],
    num_members: int,
    batch_size: int = 64,
) -> torch.Tensor:
    """Each member's mean face direction under ``network``: the natural start of their row.

    Every crop is embedded without augmentation and with BatchNorm on its running statistics
    (eval mode, restored afterwards), normalised, averaged per member and normalised again.

    Args:
        network: maps (N, 3, 112, 112) normalised crops to (N, 128) raw embeddings.
        crops: (N, 112, 112, 3) uint8 aligned crops.
        labels: (N,) int64 member indices in [0, num_members).
        num_members: M; every member needs at least one crop.
        batch_size: crops per forward pass, >= 1 (bounds memory).

    Returns:
        (M, 128) float32 unit rows.

    Raises:
        TrainingError: a member has no crop, or labels fall outside [0, num_members).
    """
    if labels.shape != (crops.shape[0],) or (
        labels.size and not 0 <= labels.min() <= labels.max() < num_members
    ):
        raise TrainingError(f"labels must be one per crop, each in [0, {num_members}).")
    counts = np.bincount(labels, minlength=num_members)
    if (counts == 0).any():
        raise TrainingError(
            f"{int((counts == 0).sum())} members have no crop; only members with crops get a row."
        )
    modes = [module.training for module in network.modules()]
    network.eval()
    try:
        sums = torch.zeros(num_members, EMBEDDING_DIM)
        with torch.no_grad():
            for start in range(0, crops.shape[0], batch_size):
                batch = network_input(crops[start : start + batch_size])
                unit = F.normalize(network(batch), dim=1)
                index = torch.from_numpy(labels[start : start + batch_size])
                sums.index_add_(0, index, unit)
    finally:
        for module, mode in zip(network.modules(), modes, strict=True):
            module.training = mode
    return F.normalize(sums, dim=1)
