"""The store's trainer in ``store serve``: the ClientApp hands it the round over a Unix socket.

Real store folders with real LFW members, a real gRPC server on the store's socket, real
training: the round answered there must be the very round the ClientApp would have computed in
its own process, within the same limits, and the ClientApp must not need torch for it.
"""

from __future__ import annotations

import logging
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from coordinator.run_config import TRAINING_DEFAULTS
from loyalnet.packed_backbone import PACKED_KEYS
from store_node.config import StoreConfig, StorePaths, write_config
from store_node.enrolment import EnrolmentRequest, enrol_member, prominent_faces
from store_node.face import FacePipeline
from store_node.face.weights import load_mobilefacenet
from store_node.gallery import Gallery, Purpose
from store_node.trainer.answer import StoreRoundError
from store_node.trainer.client import answer_in_serve
from store_node.trainer.round import answer_round
from store_node.trainer.server import Trainer
from store_node.training import backbone_state
from store_node.training.backbone import backbone_layout

MEMBERS = ("Ariel_Sharon", "Colin_Powell", "Donald_Rumsfeld", "George_W_Bush", "Tony_Blair")
PHOTOS_PER_MEMBER = 2
ROUND = {**TRAINING_DEFAULTS, "server-round": 1, "seed": 7}


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory: pytest.TempPathFactory, lfw_images: Path) -> Path:
    """A store of five LFW members, each with two crops and both consents."""
    pipeline = FacePipeline.load()
    root = tmp_path_factory.mktemp("trainer") / "s"
    root.mkdir()
    paths = StorePaths(root)
    write_config(paths, StoreConfig(store_id="store-trainer-test"))
    consent = frozenset({Purpose.RECOGNITION, Purpose.MODEL_IMPROVEMENT})
    with Gallery.create(paths.database, paths.key) as gallery:
        for name in MEMBERS:
            photos = [
                photo
                for photo in sorted((lfw_images / name).iterdir())[:6]
                if len(prominent_faces(pipeline.detect(photo))) == 1
            ][:PHOTOS_PER_MEMBER]
            enrol_member(gallery, pipeline, EnrolmentRequest(name, consent, "2026-11", 365), photos)
    return root


@pytest.fixture(scope="module")
def global_model() -> dict[str, np.ndarray]:
    packed = backbone_layout().pack(backbone_state(load_mobilefacenet()))
    return {name: tensor.numpy() for name, tensor in packed.items()}


def _copy(enrolled: Path, folder: Path) -> Path:
    """A fresh copy: a round writes the members' class rows back into the gallery."""
    shutil.copytree(enrolled, folder)
    return folder


@pytest.fixture
def serving(enrolled: Path, tmp_path: Path) -> Iterator[StorePaths]:
    paths = StorePaths(_copy(enrolled, tmp_path / "served"))
    trainer = Trainer(paths)
    trainer.start()
    try:
        yield paths
    finally:
        assert trainer.stop(5.0)


def test_a_round_trained_in_serve_is_the_round_the_clientapp_would_train(
    serving: StorePaths, global_model: dict[str, np.ndarray], enrolled: Path, tmp_path: Path
) -> None:
    served = answer_in_serve(serving.root, global_model, ROUND)
    assert served is not None and served.arrays is not None
    assert list(served.arrays) == list(PACKED_KEYS)
    assert served.examples == len(MEMBERS) * PHOTOS_PER_MEMBER and served.members == len(MEMBERS)
    assert served.seconds > 0 and np.isfinite(served.loss_last_epoch)
    here = answer_round(_copy(enrolled, tmp_path / "here"), global_model, ROUND)
    assert here.arrays is not None
    for name in PACKED_KEYS:
        np.testing.assert_array_equal(served.arrays[name], here.arrays[name])
    moved = served.arrays["backbone.parameters"] - global_model["backbone.parameters"]
    assert np.abs(moved).max() > 0  # it did train


def test_a_lapsed_consent_is_purged_before_the_round_and_counted_for_the_store(
    serving: StorePaths, global_model: dict[str, np.ndarray]
) -> None:
    """A member whose consent lapsed two days ago is purged before training; the count comes
    back over the socket for the store's own log, and the member's crops are not trained on."""
    rng = np.random.default_rng(3)
    embeddings = rng.normal(size=(2, 128)).astype(np.float32)
    with Gallery.open(serving.database, serving.key) as gallery:
        gallery.enrol(
            "lapsed-member",
            None,
            None,
            frozenset({Purpose.RECOGNITION, Purpose.MODEL_IMPROVEMENT}),
            policy_version="2026-11",
            retention_days=1,
            embeddings=embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True),
            model_version=FacePipeline.load().model_version,
            crops=rng.integers(0, 256, size=(2, 112, 112, 3), dtype=np.uint8),
            now=datetime.now(UTC) - timedelta(days=2),
        )
    served = answer_in_serve(serving.root, global_model, ROUND)
    assert served is not None and served.arrays is not None and served.purged == 1
    assert served.members == len(MEMBERS)  # the lapsed member was not trained on
    again = answer_in_serve(serving.root, global_model, ROUND)
    assert again is not None and again.purged == 0


def test_the_trainer_keeps_the_stores_limits(
    serving: StorePaths, global_model: dict[str, np.ndarray]
) -> None:
    answer = answer_in_serve(serving.root, global_model, {**ROUND, "local-epochs": 50})
    assert answer is not None and answer.arrays is None and answer.refused
    assert "local_epochs" in answer.declined or "local-epochs" in answer.declined
    unknown = answer_in_serve(serving.root, global_model, {**ROUND, "local-steps": 10})
    assert unknown is not None and unknown.arrays is None and unknown.refused


def test_a_model_of_another_architecture_is_refused_with_a_safe_message(
    serving: StorePaths, global_model: dict[str, np.ndarray]
) -> None:
    shorter = {**global_model, "backbone.parameters": global_model["backbone.parameters"][:-1]}
    with pytest.raises(StoreRoundError, match=r"backbone\.parameters"):
        answer_in_serve(serving.root, shorter, ROUND)


def test_the_socket_is_the_stores_alone_and_gone_after_stop(
    enrolled: Path, global_model: dict[str, np.ndarray]
) -> None:
    paths = StorePaths(enrolled)
    trainer = Trainer(paths)
    trainer.start()
    try:
        mode = paths.trainer_socket.stat().st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    finally:
        assert trainer.stop(5.0)
    assert not paths.trainer_socket.exists()
    assert answer_in_serve(enrolled, global_model, ROUND) is None  # no serve: train in-process
    paths.trainer_socket.write_bytes(b"")  # a stale file where the socket was
    try:
        assert answer_in_serve(enrolled, global_model, ROUND) is None
    finally:
        paths.trainer_socket.unlink()


def test_a_store_folder_too_deep_for_a_socket_trains_in_the_clientapp(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    trainer = Trainer(StorePaths(deep))
    with caplog.at_level(logging.WARNING, logger="loyalnet.store.trainer"):
        trainer.start()
    assert "too long for a Unix socket" in caplog.text
    assert not StorePaths(deep).trainer_socket.exists()
    assert trainer.stop(1.0)


def test_the_clientapp_loads_neither_torch_nor_the_gallery() -> None:
    """What makes a round cheap: the per-message process imports only Flower and numpy."""
    code = (
        "import sys, store_node.client_app; "
        "print(sorted(m for m in ('torch', 'sqlalchemy', 'store_node.gallery') "
        "if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]"
