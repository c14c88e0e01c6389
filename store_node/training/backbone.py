"""The backbone a store sends and receives: which tensors, how they are checked and named.

What leaves the store is ``backbone_state``: every learnable parameter of MobileFaceNet (conv
and linear weights and biases, BatchNorm scale and shift) and every BatchNorm's running mean
and variance; never ``num_batches_tracked``, never the CosFace class rows.

Why these:

- the parameters are what local training changes, and what FedAvg / FedProx average;
- the running statistics make the message a complete model that the coordinator can average
  with one rule for every key and hand back unchanged. With ``freeze_batchnorm`` (the default,
  see :mod:`store_node.training.local`) they are bit-for-bit the global ones the store received,
  so they carry nothing about its faces. A run that unfreezes BatchNorm makes them moving
  averages of the store's own feature means and variances: aggregated, but a known aid to
  reconstructing training images from updates (Yin et al., "See through Gradients", CVPR 2021),
  which is one more reason the default keeps them frozen;
- ``num_batches_tracked`` is an integer step counter that only matters when a BatchNorm has no
  momentum (never here); averaging it means nothing and it would tell the server how many
  batches the store ran, i.e. roughly how many consenting members it has;
- the class rows name the store's members one by one (each is close to a member's mean face
  embedding); they stay in the store's gallery, sealed.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from loyalnet.model_digest import state_digest as canonical_state_digest
from loyalnet.packed_backbone import BackboneLayout
from store_node.face.mobilefacenet import MobileFaceNet
from store_node.training.errors import TrainingError
from store_node.training.model_check import check_backbone

FINE_TUNED_PREFIX = "mobilefacenet-ft-"
_COUNTER_SUFFIX = "num_batches_tracked"


def backbone_state(model: MobileFaceNet) -> dict[str, torch.Tensor]:
    """The tensors of ``model`` that leave the store (see the module docstring for why).

    Returns:
        key -> detached float32 CPU copy, in the model's state_dict order: 256 tensors,
        1,019,648 numbers (3.9 MiB), of which 999,936 are parameters and 19,712 BatchNorm
        running means and variances.
    """
    return {
        key: value.detach().to("cpu", torch.float32).clone()
        for key, value in model.state_dict().items()
        if not key.endswith(_COUNTER_SUFFIX)
    }


def backbone_layout() -> BackboneLayout:
    """Where each tensor of this store's backbone sits in the packed arrays on the wire."""
    return BackboneLayout.of(backbone_state(MobileFaceNet()))


def backbone_keys() -> tuple[str, ...]:
    """The keys every backbone message has, in state_dict order."""
    return tuple(backbone_state(MobileFaceNet()))


def load_backbone(state: Mapping[str, torch.Tensor]) -> MobileFaceNet:
    """A fresh MobileFaceNet holding ``state`` (a ``backbone_state``), in eval mode.

    Raises:
        ModelCheckError: ``state`` fails :func:`~store_node.training.model_check.check_backbone`
            (other keys or shapes, a non-floating dtype, NaN or infinity, a negative running
            variance); a :class:`TrainingError`.
    """
    check_backbone(state)
    network = MobileFaceNet()
    # The counters are absent by design; everything else must load.
    network.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=False)
    return network.eval()


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 (hex) of a backbone state in a canonical form, independent of torch.save's bytes.

    The coordinator's manifests carry the same digest (``state_sha256``), so it is defined
    once, in :func:`loyalnet.model_digest.state_digest`, for both sides.
    """
    return canonical_state_digest(state)


def fine_tuned_version(state: Mapping[str, torch.Tensor]) -> str:
    """The model version of a fine-tuned backbone: ``mobilefacenet-ft-<8 hex of its digest>``."""
    return FINE_TUNED_PREFIX + state_digest(state)[:8]


def freeze_batchnorm_statistics(network: nn.Module) -> None:
    """Put every BatchNorm in eval mode: it normalises with, and keeps, its running statistics.

    Its scale and shift stay trainable. Call after ``network.train()``, which would undo it.
    """
    for module in network.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def freeze_leading_layers(network: MobileFaceNet, count: int) -> None:
    """Keep the first ``count`` layers of ``network`` at the received weights (no gradient).

    Layers in input order: ``conv1``, ``dw_conv``, the 15 bottlenecks of ``features``,
    ``conv2``, ``gdconv``, ``conv3``, ``bn`` (21 in all). Early layers hold the general
    edge and texture filters learned from millions of faces; fine-tuning only the later ones
    on a few hundred store crops is the usual guard against forgetting them.

    Raises:
        TrainingError: ``count`` is negative or more than the network's layers.
    """
    layers = leading_layers(network)
    if not 0 <= count <= len(layers):
        raise TrainingError(
            f"frozen_layers = {count} is outside 0..{len(layers)} (MobileFaceNet's layers)"
        )
    for layer in layers[:count]:
        for parameter in layer.parameters():
            parameter.requires_grad_(False)


def leading_layers(network: MobileFaceNet) -> list[nn.Module]:
    """``network``'s layers in input order (see :func:`freeze_leading_layers`)."""
    return [
        network.conv1,
        network.dw_conv,
        *network.features,
        network.conv2,
        network.gdconv,
        network.conv3,
        network.bn,
    ]
