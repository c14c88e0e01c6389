"""The backbone on the wire: three flat arrays instead of one Flower object per tensor.

Flower moves each array of an ``ArrayRecord`` as an object of its own, with an HTTP request
for each, so MobileFaceNet's 256 tensors cost hundreds of requests per store and direction
every round, and a round took several times a store's local training. Packed, the same
numbers travel as three arrays:

- ``backbone.parameters``: every learnable parameter, concatenated;
- ``backbone.running_mean`` and ``backbone.running_var``: BatchNorm's running statistics.

The names keep the suffixes the coordinator's rules key on: statistics are held apart from
the parameters when the update is bounded (``coordinator.store_influence``), frozen ones are
restored bit for bit, and a variance below zero is refused (``coordinator.update_screening``).
Averaging is number by number, so a packed mean is the mean of the packed tensors.

The order is the tensors' names, sorted. Each side takes the layout from its own copy of the
architecture: a store unpacks the global model with its own names and shapes, so a
coordinator cannot pick them, and an array of another length is refused before anything is
trained on it (a different loyalnet version on the two sides, or a crafted message).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from loyalnet.errors import LoyalnetError
from loyalnet.model_arrays import RUNNING_MEAN_SUFFIX, RUNNING_VARIANCE_SUFFIX, is_sent_key

PARAMETERS = "backbone.parameters"
RUNNING_MEANS = "backbone" + RUNNING_MEAN_SUFFIX
RUNNING_VARIANCES = "backbone" + RUNNING_VARIANCE_SUFFIX
PACKED_KEYS = (PARAMETERS, RUNNING_MEANS, RUNNING_VARIANCES)
"""The arrays of a packed backbone, in the order they are sent."""


class PackedBackboneError(LoyalnetError):
    """A packed backbone does not fit this side's architecture."""


def _group(name: str) -> str:
    if name.endswith(RUNNING_MEAN_SUFFIX):
        return RUNNING_MEANS
    if name.endswith(RUNNING_VARIANCE_SUFFIX):
        return RUNNING_VARIANCES
    return PARAMETERS


@dataclass(frozen=True)
class BackboneLayout:
    """Which tensor sits where in the packed arrays.

    Attributes:
        shapes: name -> shape of every tensor that travels, in name order.
    """

    shapes: Mapping[str, tuple[int, ...]]

    @classmethod
    def of(cls, state: Mapping[str, torch.Tensor]) -> BackboneLayout:
        """The layout of a backbone state (its counters left out, as they never travel)."""
        return cls({name: tuple(state[name].shape) for name in sorted(state) if is_sent_key(name)})

    def sizes(self) -> dict[str, int]:
        """Numbers in each packed array."""
        sizes = dict.fromkeys(PACKED_KEYS, 0)
        for name, shape in self.shapes.items():
            sizes[_group(name)] += int(torch.Size(shape).numel())
        return sizes

    def pack(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``state`` as the three flat float32 arrays, in :data:`PACKED_KEYS` order.

        Raises:
            PackedBackboneError: ``state`` lacks a tensor of the layout or has another shape.
        """
        parts: dict[str, list[torch.Tensor]] = {key: [] for key in PACKED_KEYS}
        for name, shape in self.shapes.items():
            tensor = state.get(name)
            if tensor is None or tuple(tensor.shape) != shape:
                raise PackedBackboneError(
                    f"the backbone to send has no tensor {name} of shape {shape}; both sides "
                    "must run the same loyalnet version."
                )
            parts[_group(name)].append(tensor.detach().to("cpu", torch.float32).reshape(-1))
        return {
            key: torch.cat(tensors) if tensors else torch.empty(0) for key, tensors in parts.items()
        }

    def unpack(self, packed: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The named tensors of ``packed`` (the arrays :meth:`pack` makes), in name order.

        Raises:
            PackedBackboneError: other arrays, or arrays of other lengths, than this layout's.
        """
        sizes = self.sizes()
        if set(packed) != set(PACKED_KEYS):
            raise PackedBackboneError(
                f"a packed backbone has the arrays {', '.join(PACKED_KEYS)}, not "
                f"{', '.join(sorted(packed)) or 'none'}; both sides must run the same "
                "loyalnet version."
            )
        for key in PACKED_KEYS:
            if tuple(packed[key].shape) != (sizes[key],):
                raise PackedBackboneError(
                    f"{key} holds {tuple(packed[key].shape)} numbers where this architecture "
                    f"has ({sizes[key]},); both sides must run the same loyalnet version."
                )
        offsets = dict.fromkeys(PACKED_KEYS, 0)
        state: dict[str, torch.Tensor] = {}
        for name, shape in self.shapes.items():
            key = _group(name)
            count = int(torch.Size(shape).numel())
            flat = packed[key][offsets[key] : offsets[key] + count]
            state[name] = flat.to(torch.float32).reshape(shape).clone()
            offsets[key] += count
        return state
