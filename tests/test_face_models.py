"""The face networks: layouts fit the pretrained weights, outputs match the reference graph."""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from loyalnet.assets import MOBILEFACENET_ONNX, asset_path, data_home, dataset_dir
from store_node.face import FacePipeline, load_image
from store_node.face.mobilefacenet import MobileFaceNet
from store_node.face.retinaface import RetinaFace
from store_node.face.weights import (
    WeightsError,
    freeze_embedder,
    fuse_for_inference,
    load_mobilefacenet,
    load_retinaface,
    onnxruntime_embedder,
    prepare_embedder,
)

# Eight different people, one LFW image each, all with a single clear face.
PEOPLE = (
    "George_W_Bush",
    "Colin_Powell",
    "Jennifer_Capriati",
    "Donald_Rumsfeld",
    "Gerhard_Schroeder",
    "Ariel_Sharon",
    "Hugo_Chavez",
    "Serena_Williams",
)
# Same input -> same 128 numbers; the embeddings have entries of magnitude ~1.
PARITY_TOLERANCE = 1e-4
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _shapes_file(name: str) -> dict[str, tuple[int, ...]]:
    """The key -> shape listing shipped beside the weights."""
    shapes: dict[str, tuple[int, ...]] = {}
    for line in (data_home() / "models" / name).read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        key, shape = line.split("\t")
        dims = shape.strip("()").replace(" ", "").split(",")
        shapes[key] = tuple(int(d) for d in dims if d)
    return shapes


@pytest.mark.parametrize(
    ("network", "listing"),
    [
        (RetinaFace, "retinaface_mobilenet0.25.shapes.txt"),
        (MobileFaceNet, "mobilefacenet_ms1m.shapes.txt"),
    ],
)
def test_state_dict_layout_matches_listing(
    network: Callable[[], torch.nn.Module], listing: str
) -> None:
    expected = _shapes_file(listing)
    actual = {key: tuple(t.shape) for key, t in network().state_dict().items()}
    assert actual == expected


def test_weights_load_strictly_in_eval_mode() -> None:
    detector = load_retinaface()
    embedder = load_mobilefacenet()
    assert not detector.training and not embedder.training
    with torch.inference_mode():
        boxes, logits, marks = detector(torch.zeros(2, 3, 240, 320))
        # 2 anchors per cell on the 30x40, 15x20 and 8x10 grids.
        anchors = 2 * (30 * 40 + 15 * 20 + 8 * 10)
        assert boxes.shape == (2, anchors, 4)
        assert logits.shape == (2, anchors, 2)
        assert marks.shape == (2, anchors, 10)
        assert embedder(torch.zeros(3, 3, 112, 112)).shape == (3, 128)


@pytest.fixture(scope="module")
def lfw_crops() -> NDArray[np.uint8]:
    """(8, 112, 112, 3) real faces, detected and aligned by our pipeline."""
    pipeline = FacePipeline.load()
    lfw = dataset_dir("lfw") / "images"
    encodings = [pipeline.encode(lfw / name / f"{name}_0001.jpg") for name in PEOPLE]
    assert all(len(found) == 1 for found in encodings)
    return np.stack([found[0].crop for found in encodings])


def _normalise(crops: NDArray[np.uint8]) -> NDArray[np.float32]:
    scaled = (crops.astype(np.float32) / 255.0 - _MEAN) / _STD
    return np.ascontiguousarray(scaled.transpose(0, 3, 1, 2))


def _onnx_reference(batch: NDArray[np.float32], onnx_path: Path) -> NDArray[np.float32]:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    # The reference graph was exported with a batch of 1.
    rows = [session.run(["output0"], {"input0": batch[i : i + 1]})[0] for i in range(len(batch))]
    return np.concatenate(rows).astype(np.float32)


def test_mobilefacenet_matches_reference_onnx_on_real_faces(
    lfw_crops: NDArray[np.uint8],
) -> None:
    batch = _normalise(lfw_crops)
    reference = _onnx_reference(batch, asset_path(MOBILEFACENET_ONNX))
    eager = load_mobilefacenet()
    shipped = freeze_embedder(eager)
    fused = fuse_for_inference(eager)
    exported = onnxruntime_embedder(eager)
    inputs = torch.from_numpy(batch)
    with torch.inference_mode():
        outputs = {
            "eager": eager(inputs).numpy(),
            "frozen (shipped)": shipped(inputs).numpy(),
            "fused channels-last": fused(inputs).numpy(),
            "onnxruntime backend (re-exported)": exported(inputs).numpy(),
            # The embedder feeds channels-last views; the result must not depend on layout.
            "frozen, channels-last input": shipped(
                inputs.contiguous(memory_format=torch.channels_last)
            ).numpy(),
        }
    assert np.abs(reference).max() > 0.5  # real faces give a non-trivial signal
    for name, output in outputs.items():
        diff = float(np.abs(output - reference).max())
        assert diff <= PARITY_TOLERANCE, f"{name}: max abs difference {diff:.2e}"


def test_onnxruntime_backend_is_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = importlib.import_module

    def without_onnxruntime(name: str, package: str | None = None) -> ModuleType:
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, package)

    monkeypatch.setattr(importlib, "import_module", without_onnxruntime)
    network = MobileFaceNet().eval()
    with pytest.raises(WeightsError, match="pip install onnxruntime"):
        prepare_embedder(network, "onnxruntime")
    # The default backend never touches onnxruntime.
    with torch.inference_mode():
        assert prepare_embedder(network)(torch.zeros(2, 3, 112, 112)).shape == (2, 128)
    with pytest.raises(WeightsError, match="unknown embedder backend"):
        prepare_embedder(network, "tensorrt")  # type: ignore[arg-type]


def test_the_onnxruntime_detector_matches_torch_on_real_faces(lfw_images: Path) -> None:
    from store_node.face.detector import FaceDetector, _to_network_tensor
    from store_node.face.weights import load_retinaface, prepare_detector

    network = load_retinaface()
    torch_net, ort_net = (
        prepare_detector(network, "torch"),
        prepare_detector(network, "onnxruntime"),
    )
    photos = [
        lfw_images / p / f"{p}_0001.jpg"
        for p in ("Colin_Powell", "Tony_Blair", "Gloria_Macapagal_Arroyo")
    ]
    frame = np.full((240, 320, 3), 100, np.uint8)  # an odd-sized frame with three faces in it
    for index, photo in enumerate(photos):
        frame[:125, index * 100 : index * 100 + 100] = load_image(photo)[60:185, 75:175]
    images = [load_image(photo) for photo in photos] + [frame]
    for image in images:
        inputs = _to_network_tensor(image)
        with torch.inference_mode():
            expected, actual = torch_net(inputs), ort_net(inputs)
        for name, a, b in zip(("boxes", "scores", "landmarks"), expected, actual, strict=True):
            diff = float((a - b).abs().max())
            assert diff <= PARITY_TOLERANCE, f"{name} of a {image.shape} image: {diff:.2e}"
        found = FaceDetector(torch_net).detect(image), FaceDetector(ort_net).detect(image)
        assert len(found[0]) == len(found[1]) >= 1
        for a, b in zip(*found, strict=True):
            assert np.allclose(a.box, b.box, atol=1e-2) and np.allclose(
                a.landmarks, b.landmarks, atol=1e-2
            )


def test_onnx_graphs_are_cached_by_the_sha256_of_their_weights(tmp_path: Path) -> None:
    from store_node.face.onnx_graphs import cached_graph, weights_digest

    network = MobileFaceNet().eval()
    example = torch.zeros(1, 3, 112, 112)

    def graph(net: torch.nn.Module) -> Path:
        return cached_graph(net, "mobilefacenet", example, ["crops"], ["embeddings"], {}, tmp_path)

    first = graph(network)
    assert weights_digest(network)[:24] in first.name
    written = first.stat().st_mtime_ns
    assert graph(network) == first and first.stat().st_mtime_ns == written  # not exported again
    other = copy.deepcopy(network)
    with torch.no_grad():
        other.conv3.weight.add_(0.01)  # other weights, another graph
    assert graph(other) != first
    first.write_bytes(b"torn file")  # a damaged cache file is exported again
    assert graph(network) == first and first.stat().st_size > 100_000
    assert [p.name for p in (tmp_path / "onnx").iterdir() if p.name.startswith(".")] == []
