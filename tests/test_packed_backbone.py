"""The backbone on the wire as three flat arrays (``loyalnet.packed_backbone``)."""

from __future__ import annotations

import pytest
import torch

from coordinator.initial_model import pretrained_backbone
from loyalnet.packed_backbone import (
    PACKED_KEYS,
    PARAMETERS,
    RUNNING_MEANS,
    RUNNING_VARIANCES,
    BackboneLayout,
    PackedBackboneError,
)
from store_node.face.mobilefacenet import MobileFaceNet
from store_node.training.backbone import backbone_layout, backbone_state


def test_the_pretrained_backbone_travels_as_three_arrays_and_comes_back_bit_for_bit() -> None:
    pretrained = pretrained_backbone()
    layout = BackboneLayout.of(pretrained)
    # Both sides take the layout from their own copy of the architecture; they agree.
    assert layout == backbone_layout()
    packed = layout.pack(pretrained)
    assert list(packed) == list(PACKED_KEYS)
    assert all(array.dtype == torch.float32 and array.ndim == 1 for array in packed.values())
    numbers = {key: array.numel() for key, array in packed.items()}
    assert sum(numbers.values()) == sum(value.numel() for value in pretrained.values())
    assert numbers[RUNNING_MEANS] == numbers[RUNNING_VARIANCES] > 0
    assert (packed[RUNNING_VARIANCES] >= 0).all()

    unpacked = layout.unpack(packed)
    assert set(unpacked) == set(pretrained)
    assert all(torch.equal(unpacked[key], pretrained[key]) for key in pretrained)


def test_packing_ignores_dict_order_and_step_counters() -> None:
    state = dict(MobileFaceNet().state_dict())
    layout = BackboneLayout.of(state)
    assert not any(name.endswith("num_batches_tracked") for name in layout.shapes)
    shuffled = dict(reversed(list(backbone_state(MobileFaceNet()).items())))
    for key, value in shuffled.items():
        shuffled[key] = torch.randn_like(value)
    ordered = dict(sorted(shuffled.items()))
    first, second = layout.pack(shuffled), layout.pack(ordered)
    assert all(torch.equal(first[key], second[key]) for key in PACKED_KEYS)


def test_a_mean_of_packed_backbones_is_the_packed_mean() -> None:
    layout = BackboneLayout.of(backbone_state(MobileFaceNet()))
    a, b = backbone_state(MobileFaceNet()), backbone_state(MobileFaceNet())
    packed_mean = {key: (layout.pack(a)[key] + layout.pack(b)[key]) / 2 for key in PACKED_KEYS}
    mean = layout.unpack(packed_mean)
    for key in a:
        assert torch.allclose(mean[key], (a[key] + b[key]) / 2), key


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (lambda p: {**p, PARAMETERS: p[PARAMETERS][:-1]}, "holds"),
        (lambda p: {**p, "classifier": torch.zeros(3)}, "arrays"),
        (lambda p: {k: v for k, v in p.items() if k != RUNNING_MEANS}, "arrays"),
        (lambda p: {**p, PARAMETERS: p[PARAMETERS].reshape(1, -1)}, "holds"),
    ],
)
def test_a_packed_backbone_of_another_shape_is_refused(change: object, said: str) -> None:
    layout = BackboneLayout.of(backbone_state(MobileFaceNet()))
    packed = layout.pack(backbone_state(MobileFaceNet()))
    assert callable(change)
    with pytest.raises(PackedBackboneError, match=said):
        layout.unpack(change(packed))


def test_packing_a_state_that_lacks_a_tensor_is_refused() -> None:
    state = backbone_state(MobileFaceNet())
    layout = BackboneLayout.of(state)
    missing = dict(list(state.items())[1:])
    with pytest.raises(PackedBackboneError, match="same loyalnet version"):
        layout.pack(missing)
