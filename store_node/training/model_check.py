"""The check every model a store receives passes before it is used: does it fit this store?

A backbone arrives from the coordinator each training round and again when the store adopts
the chain's model. Before either, :func:`check_backbone` holds it against the store's own,
installed MobileFaceNet: the expected names, shapes and dtypes come from the network this store
runs, never from the sender, so a message cannot describe itself into acceptance. It refuses

- missing or extra tensors (another architecture, or a message with extra payload),
- a shape that differs (``load_state_dict`` would fail later, or worse, broadcast),
- a non-floating dtype (integers or booleans are no weights of this network),
- NaN or infinity anywhere (a diverged or poisoned model would make every template NaN and
  every comparison meaningless),
- a negative BatchNorm running variance (BatchNorm takes its square root: NaN again).

The check costs one pass over the 1,019,648 numbers (milliseconds), so it runs on every
round's received model as well as on adoption and on every load of an adopted model.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from loyalnet.model_arrays import RUNNING_VARIANCE_SUFFIX, is_sent_key
from store_node.face.mobilefacenet import MobileFaceNet
from store_node.training.errors import TrainingError


class ModelCheckError(TrainingError):
    """A received model that does not fit, or must not be used by, this store.

    A :class:`TrainingError` so that a training round that receives such a model fails as
    any other unusable hand-over does.
    """


@dataclass(frozen=True)
class ExpectedArray:
    """One tensor of the store's backbone: its name, shape and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype


@functools.cache
def expected_arrays() -> tuple[ExpectedArray, ...]:
    """The tensors a backbone message must hold, from this store's MobileFaceNet, in order.

    Cached: built once per process from a fresh network (its state_dict without the
    BatchNorm step counters, see :mod:`store_node.training.backbone`).
    """
    return tuple(
        ExpectedArray(name, tuple(value.shape), value.dtype)
        for name, value in MobileFaceNet().state_dict().items()
        if is_sent_key(name)
    )


def check_backbone(state: Mapping[str, torch.Tensor]) -> None:
    """Refuse ``state`` unless it is a complete, finite backbone of this store's MobileFaceNet.

    Args:
        state: name -> tensor, as received (e.g. ``ArrayRecord.to_torch_state_dict()``).

    Raises:
        ModelCheckError: what was wrong (the first problem found) and what to do about it.
    """
    expected = expected_arrays()
    names = {array.name for array in expected}
    missing = [array.name for array in expected if array.name not in state]
    unexpected = sorted(str(name) for name in state if name not in names)
    if missing or unexpected:
        raise ModelCheckError(
            f"the received model does not fit this store's MobileFaceNet: {len(missing)} "
            f"tensor(s) missing {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}; "
            "it is not a backbone_state of the chain's model, so do not use it and check "
            "which model the coordinator sends."
        )
    for array in expected:
        value = state[array.name]
        if not isinstance(value, torch.Tensor) or value.layout != torch.strided:
            raise ModelCheckError(
                f"received model tensor {array.name} is a {type(value).__name__}, not a dense "
                "tensor; the model is malformed, so do not use it."
            )
        if tuple(value.shape) != array.shape:
            raise ModelCheckError(
                f"received model tensor {array.name} has shape {tuple(value.shape)}, this "
                f"store's MobileFaceNet needs {array.shape}; the model is another architecture "
                "or was altered, so do not use it."
            )
        if not value.is_floating_point():
            raise ModelCheckError(
                f"received model tensor {array.name} has dtype {value.dtype}, not a floating "
                f"type like the network's {array.dtype}; the model is malformed, so do not use it."
            )
        # Checked in the network's own precision: a float64 value beyond float32's range
        # would become infinity on loading.
        values = value.detach().to("cpu", array.dtype)
        if not torch.isfinite(values).all():
            raise ModelCheckError(
                f"received model tensor {array.name} holds NaN or infinity; the model diverged "
                "or was altered, so do not use it: restart from the last good model version."
            )
        if array.name.endswith(RUNNING_VARIANCE_SUFFIX) and bool((values < 0).any()):
            raise ModelCheckError(
                f"received model tensor {array.name} holds a negative BatchNorm running "
                "variance, which no training produces; the model was altered, so do not use it."
            )
