"""The pieces of local training on their own: augmentation, input normalisation, the CosFace
head, the FedProx term, the backbone message, the run config. Small tensors, no store."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from store_node.face import load_image
from store_node.face.embedder import FaceEmbedder
from store_node.face.mobilefacenet import MobileFaceNet
from store_node.face.weights import load_mobilefacenet
from store_node.training import (
    AugmentConfig,
    CosFaceHead,
    TrainingConfig,
    TrainingError,
    augment,
    backbone_state,
    fine_tuned_version,
    load_backbone,
)
from store_node.training.augment import gaussian_blur, low_resolution
from store_node.training.backbone import state_digest
from store_node.training.cosface import mean_embeddings
from store_node.training.pixels import crops_to_unit, network_input, normalise
from store_node.training.proximal import parameter_anchor, proximal_term

NO_CHANGE = AugmentConfig(
    flip_probability=0.0,
    brightness=0.0,
    contrast=0.0,
    saturation=0.0,
    white_balance=0.0,
    blur_probability=0.0,
    low_resolution_probability=0.0,
)


@pytest.fixture(scope="module")
def crops(lfw_images: Path) -> NDArray[np.uint8]:
    """Four 112x112 RGB crops (centre of LFW photos: face-like texture, real colours)."""
    names = ("George_W_Bush", "Colin_Powell", "Serena_Williams", "Tony_Blair")
    images = [load_image(lfw_images / n / f"{n}_0001.jpg")[69:181, 69:181] for n in names]
    return np.ascontiguousarray(np.stack(images))


def test_network_input_matches_the_embedder(crops: NDArray[np.uint8]) -> None:
    network = load_mobilefacenet()
    expected = FaceEmbedder(network, model_version="test").embed(crops)
    with torch.no_grad():
        ours = torch.nn.functional.normalize(network(network_input(crops)), dim=1).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_augment_is_seeded_shaped_and_bounded(crops: NDArray[np.uint8]) -> None:
    first = augment(crops, torch.Generator().manual_seed(5))
    again = augment(crops, torch.Generator().manual_seed(5))
    other = augment(crops, torch.Generator().manual_seed(6))
    assert first.shape == (4, 3, 112, 112) and first.dtype == torch.float32
    assert torch.equal(first, again) and not torch.equal(first, other)
    low, high = normalise(torch.zeros(1, 3, 1, 1)), normalise(torch.ones(1, 3, 1, 1))
    assert bool((first >= low - 1e-5).all() and (first <= high + 1e-5).all())


def test_augment_with_nothing_to_do_is_the_plain_input(crops: NDArray[np.uint8]) -> None:
    plain = augment(crops, torch.Generator().manual_seed(0), NO_CHANGE)
    torch.testing.assert_close(plain, network_input(crops), atol=1e-5, rtol=0)
    mirrored = AugmentConfig(**{**NO_CHANGE.__dict__, "flip_probability": 1.0})
    flipped = augment(crops, torch.Generator().manual_seed(0), mirrored)
    torch.testing.assert_close(flipped, network_input(crops).flip(3), atol=1e-5, rtol=0)


def test_blur_and_low_resolution_remove_detail_and_spare_the_rest(
    crops: NDArray[np.uint8],
) -> None:
    unit = crops_to_unit(crops)
    blurred = gaussian_blur(unit, torch.tensor([0.0, 1.5, 0.0, 0.0]))
    small = low_resolution(unit, torch.tensor([112, 112, 24, 112]))

    def detail(x: torch.Tensor) -> float:  # mean absolute horizontal gradient
        return float((x[..., 1:] - x[..., :-1]).abs().mean())

    torch.testing.assert_close(blurred[[0, 2, 3]], unit[[0, 2, 3]], atol=1e-5, rtol=0)
    torch.testing.assert_close(small[[0, 1, 3]], unit[[0, 1, 3]])
    assert detail(blurred[1]) < 0.6 * detail(unit[1])
    assert detail(small[2]) < 0.6 * detail(unit[2])
    # A blur keeps the mean brightness (normalised kernel, reflected borders).
    assert float(blurred[1].mean()) == pytest.approx(float(unit[1].mean()), abs=2e-3)


def test_augment_refuses_other_shapes() -> None:
    with pytest.raises(TrainingError, match="uint8"):
        augment(np.zeros((2, 64, 64, 3), np.uint8), torch.Generator())
    with pytest.raises(TrainingError, match="probabilities"):
        AugmentConfig(blur_probability=1.5)


def test_cosface_logits_follow_the_paper() -> None:
    rows = torch.tensor([[1.0] + [0.0] * 127, [0.0, 2.0] + [0.0] * 126])
    head = CosFaceHead(rows, scale=10.0, margin=0.25)
    embedding = torch.tensor([[3.0, 3.0] + [0.0] * 126])  # 45 degrees from both rows
    cos = math.sqrt(0.5)
    logits = head(embedding, torch.tensor([1]))
    torch.testing.assert_close(logits, torch.tensor([[10 * cos, 10 * (cos - 0.25)]]))
    expected_loss = math.log1p(math.exp(10 * 0.25))  # -log softmax of the true class
    loss = head.loss(embedding, torch.tensor([1])).detach()
    assert float(loss) == pytest.approx(expected_loss)
    np.testing.assert_allclose(np.linalg.norm(head.rows(), axis=1), 1.0, atol=1e-6)


def test_mean_embeddings_start_each_row_at_its_member(crops: NDArray[np.uint8]) -> None:
    network = load_mobilefacenet().train()
    labels = np.array([0, 1, 1, 0], dtype=np.int64)
    rows = mean_embeddings(network, crops, labels, 2)
    with torch.no_grad():
        unit = torch.nn.functional.normalize(network.eval()(network_input(crops)), dim=1)
    expected = torch.nn.functional.normalize(
        torch.stack([unit[[0, 3]].mean(0), unit[[1, 2]].mean(0)]), dim=1
    )
    torch.testing.assert_close(rows, expected, atol=1e-5, rtol=0)
    network.train()
    mean_embeddings(network, crops, labels, 2)
    assert network.training and network.bn.training  # modes restored
    with pytest.raises(TrainingError, match="no crop"):
        mean_embeddings(network, crops, labels, 3)


def test_the_proximal_term_is_half_mu_times_the_squared_distance() -> None:
    network = torch.nn.Linear(3, 2)
    anchor = parameter_anchor(network)
    with torch.no_grad():
        network.weight.add_(0.5)  # 6 entries moved by 0.5
        network.bias.sub_(1.0)  # 2 entries moved by 1
    term = proximal_term(network, anchor, mu=0.1)
    assert float(term.detach()) == pytest.approx(0.05 * (6 * 0.25 + 2 * 1.0))
    term.backward()  # type: ignore[no-untyped-call]
    assert network.weight.grad is not None
    torch.testing.assert_close(network.weight.grad, torch.full((2, 3), 0.1 * 0.5))
    assert float(proximal_term(network, anchor, mu=0.0)) == 0.0


def test_the_backbone_message_has_weights_and_statistics_but_no_counters() -> None:
    network = MobileFaceNet()
    state = backbone_state(network)
    assert "bn.running_mean" in state and "conv1.1.running_var" in state
    assert not [key for key in state if key.endswith("num_batches_tracked")]
    parameters = {name for name, _ in network.named_parameters()}
    assert parameters <= set(state)
    assert sum(state[name].numel() for name in parameters) == 999_936
    assert sum(value.numel() for value in state.values()) == 1_019_648  # 3.9 MiB of float32

    reloaded = load_backbone(state)
    assert all(torch.equal(backbone_state(reloaded)[k], v) for k, v in state.items())
    with pytest.raises(TrainingError, match="missing"):
        load_backbone({k: v for k, v in state.items() if k != "conv3.bias"})
    with pytest.raises(TrainingError, match="shape"):
        load_backbone({**state, "conv3.bias": torch.zeros(3)})
    with pytest.raises(TrainingError, match="NaN"):
        load_backbone({**state, "conv3.bias": torch.full((128,), math.nan)})


def test_fine_tuned_versions_name_the_tensors() -> None:
    state = backbone_state(MobileFaceNet())
    copy = {key: value.clone() for key, value in state.items()}
    assert state_digest(copy) == state_digest(state)
    copy["conv3.bias"][0] += 1e-6
    assert fine_tuned_version(copy) != fine_tuned_version(state)
    assert fine_tuned_version(state).startswith("mobilefacenet-ft-")


def test_training_config_from_a_flower_run_config() -> None:
    config = TrainingConfig.from_run_config(
        {"local-epochs": 2, "learning_rate": 1, "proximal-mu": 0.01, "num-server-rounds": 9}
    )
    assert (config.local_epochs, config.learning_rate, config.proximal_mu) == (2, 1.0, 0.01)
    assert config.freeze_batchnorm and config.min_members == 5
    with pytest.raises(TrainingError, match="local-epochs"):
        TrainingConfig.from_run_config({"local-epochs": 1.5})
    with pytest.raises(TrainingError, match="freeze_batchnorm"):
        TrainingConfig.from_run_config({"freeze_batchnorm": 1})
    with pytest.raises(TrainingError, match="min_members >= 2"):
        TrainingConfig(min_members=1)
