"""Local training and model adoption on a real store: LFW faces, real SQLite files, real keys.

Six LFW people enrol with consent to model improvement (three photos each, so three crops), one
with recognition only. Photo 6 of each person is held out for identification after adoption.
The enrolled store is built once and copied for each test, so the tests do not depend on each
other's order.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord

from store_node.client_app import reply_metrics
from store_node.config import StoreConfig, StorePaths, write_config
from store_node.enrolment import EnrolmentRequest, enrol_member, prominent_faces
from store_node.face import FacePipeline
from store_node.face.weights import MOBILEFACENET_VERSION, load_mobilefacenet
from store_node.gallery import Gallery, Purpose
from store_node.gallery.class_weights import load_class_weights
from store_node.gallery.training_data import training_examples
from store_node.retemplate import (
    adopt_model,
    recognition_pipeline,
    recognition_version,
)
from store_node.trainer.round import answer_of
from store_node.training import (
    TrainingConfig,
    backbone_state,
    fine_tuned_version,
    train_store_round,
)
from store_node.training.errors import TrainingError

TRAINED = (
    "Ariel_Sharon",
    "Colin_Powell",
    "Donald_Rumsfeld",
    "Gerhard_Schroeder",
    "Jean_Chretien",
    "Tony_Blair",
)
RECOGNITION_ONLY = "Hugo_Chavez"
CROPS_PER_MEMBER = 3
EXAMPLES = len(TRAINED) * CROPS_PER_MEMBER  # crops trained on: 18


def _single_face_photos(
    pipeline: FacePipeline, lfw_images: Path, name: str, count: int
) -> list[Path]:
    """The first ``count`` photos of ``name`` that show one prominent face (enrolment's rule)."""
    chosen = []
    for photo in sorted((lfw_images / name).iterdir()):
        if len(prominent_faces(pipeline.detect(photo))) == 1:
            chosen.append(photo)
        if len(chosen) == count:
            return chosen
    raise AssertionError(f"LFW has fewer than {count} single-face photos of {name}")


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _raw(db: Path, sql: str) -> list[tuple[object, ...]]:
    connection = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return list(connection.execute(sql))
    finally:
        connection.close()


@pytest.fixture(scope="module")
def pipeline() -> FacePipeline:
    return FacePipeline.load()


@pytest.fixture(scope="module")
def global_backbone() -> dict[str, torch.Tensor]:
    return backbone_state(load_mobilefacenet())


@pytest.fixture(scope="module")
def photos(pipeline: FacePipeline, lfw_images: Path) -> dict[str, list[Path]]:
    """Per person: three enrolment photos, then one held out for identification."""
    return {
        name: _single_face_photos(pipeline, lfw_images, name, CROPS_PER_MEMBER + 1)
        for name in (*TRAINED, RECOGNITION_ONLY)
    }


@pytest.fixture(scope="module")
def enrolled(
    tmp_path_factory: pytest.TempPathFactory,
    pipeline: FacePipeline,
    photos: dict[str, list[Path]],
) -> Path:
    root = tmp_path_factory.mktemp("enrolled") / "store"
    root.mkdir()
    paths = StorePaths(root)
    write_config(paths, StoreConfig(store_id="store-training-test"))
    with Gallery.create(paths.database, paths.key) as gallery:
        for name in (*TRAINED, RECOGNITION_ONLY):
            purposes = {Purpose.RECOGNITION}
            if name != RECOGNITION_ONLY:
                purposes.add(Purpose.MODEL_IMPROVEMENT)
            request = EnrolmentRequest(name, frozenset(purposes), "2026-11", 365)
            report = enrol_member(gallery, pipeline, request, photos[name][:CROPS_PER_MEMBER])
            assert report.templates_added == CROPS_PER_MEMBER
    return root


@pytest.fixture
def store(enrolled: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(enrolled, copy)
    return copy


def test_only_model_improvement_members_are_trained_on(store: Path) -> None:
    paths = StorePaths(store)
    with Gallery.open(paths.database, paths.key) as gallery:
        data = training_examples(gallery)
    assert data.member_ids == sorted(TRAINED)
    assert data.crops.shape == (EXAMPLES, 112, 112, 3)
    assert np.bincount(data.labels).tolist() == [CROPS_PER_MEMBER] * len(TRAINED)


def test_a_round_sends_a_changed_backbone_and_keeps_its_class_weights(
    store: Path, enrolled: Path, tmp_path: Path, global_backbone: dict[str, torch.Tensor]
) -> None:
    config = TrainingConfig(seed=7)
    first = train_store_round(store, global_backbone, config)

    assert first.declined == "" and first.backbone is not None
    assert (first.examples, first.members, first.new_class_weights) == (EXAMPLES, 6, 6)
    assert np.isfinite([first.loss_first_epoch, first.loss_last_epoch]).all()
    sent = first.backbone
    assert list(sent) == list(global_backbone)
    assert not any(key.endswith("num_batches_tracked") for key in sent)
    assert all(sent[k].shape == global_backbone[k].shape for k in sent)
    changed = [k for k in sent if not torch.equal(sent[k], global_backbone[k])]
    assert "conv1.0.weight" in changed and "conv3.weight" in changed
    # BatchNorm statistics are frozen by default: sent exactly as received.
    assert not [k for k in changed if k.endswith(("running_mean", "running_var"))]

    # The class rows are stored sealed, one per trained member, and never in clear.
    paths = StorePaths(store)
    with Gallery.open(paths.database, paths.key) as gallery:
        rows_after_first = load_class_weights(gallery, TRAINED)
    assert sorted(rows_after_first) == sorted(TRAINED)
    sealed = _raw(paths.database, "SELECT member_id, length(sealed_weight) FROM class_weights")
    assert sorted(sealed) == sorted((name, 512 + 28) for name in TRAINED)
    files = _folder_bytes(store)
    for row in rows_after_first.values():
        plaintext = row.astype("<f4").tobytes()
        assert not [name for name, data in files.items() if plaintext[:64] in data]

    # The second round starts from the stored rows and moves them.
    second = train_store_round(store, sent, config)
    assert second.new_class_weights == 0 and second.backbone is not None
    with Gallery.open(paths.database, paths.key) as gallery:
        rows_after_second = load_class_weights(gallery, TRAINED)
    assert all(not np.array_equal(rows_after_first[m], rows_after_second[m]) for m in TRAINED)

    # Same seed, same store, same starting model: the same backbone.
    again = tmp_path / "again"
    shutil.copytree(enrolled, again)
    repeat = train_store_round(again, global_backbone, config)
    assert repeat.backbone is not None
    assert all(torch.equal(repeat.backbone[k], sent[k]) for k in sent)


def test_fedprox_with_live_batchnorm_statistics_trains_and_sends_them(
    store: Path, global_backbone: dict[str, torch.Tensor]
) -> None:
    config = TrainingConfig(freeze_batchnorm=False, proximal_mu=0.5, batch_size=EXAMPLES - 1)
    outcome = train_store_round(store, global_backbone, config)  # batches of 17 crops and 1
    assert outcome.backbone is not None and np.isfinite(outcome.loss_last_epoch)
    assert not torch.equal(outcome.backbone["bn.running_mean"], global_backbone["bn.running_mean"])


def test_erasing_a_trained_member_leaves_no_class_weight(
    store: Path, global_backbone: dict[str, torch.Tensor]
) -> None:
    train_store_round(store, global_backbone, TrainingConfig(seed=1))
    paths = StorePaths(store)
    erased = TRAINED[0]
    sealed = {
        str(member): bytes(blob)  # type: ignore[call-overload]
        for member, blob in _raw(
            paths.database, "SELECT member_id, sealed_weight FROM class_weights"
        )
    }
    with Gallery.open(paths.database, paths.key) as gallery:
        gallery.erase(erased)
        assert sorted(load_class_weights(gallery, TRAINED)) == list(TRAINED[1:])
    files = _folder_bytes(store)
    assert not [name for name, data in files.items() if sealed[erased][:64] in data]
    assert [name for name, data in files.items() if sealed[TRAINED[1]][:64] in data]


def test_frozen_layers_come_back_as_they_were_sent(
    store: Path, global_backbone: dict[str, torch.Tensor]
) -> None:
    """The first 8 layers (stem and the 28x28 stage) stay; the later ones train."""
    trained = train_store_round(store, global_backbone, TrainingConfig(frozen_layers=8)).backbone
    assert trained is not None
    early = ("conv1.", "dw_conv.", *(f"features.{i}." for i in range(6)))
    kept = [name for name in global_backbone if name.startswith(early)]
    moved = [name for name in global_backbone if name.startswith("features.10.")]
    assert kept and moved
    for name in kept:
        assert torch.equal(trained[name], global_backbone[name]), name
    assert any(not torch.equal(trained[name], global_backbone[name]) for name in moved)
    with pytest.raises(TrainingError, match=r"outside 0\.\.21"):
        train_store_round(store, global_backbone, TrainingConfig(frozen_layers=22))


def test_a_store_with_too_few_members_declines(
    store: Path, global_backbone: dict[str, torch.Tensor]
) -> None:
    outcome = train_store_round(store, global_backbone, TrainingConfig(min_members=7))
    assert outcome.backbone is None and outcome.examples == 0 and outcome.members == 6
    assert outcome.declined == "only 6 consenting members, the run needs 7"
    assert reply_metrics(answer_of(outcome), ArrayRecord()) == {"declined": 1}  # no count is sent
    assert _raw(StorePaths(store).database, "SELECT count(*) FROM class_weights") == [(0,)]


def test_adopting_a_model_retemplates_members_with_crops_and_flags_the_rest(
    store: Path, global_backbone: dict[str, torch.Tensor], photos: dict[str, list[Path]]
) -> None:
    trained = train_store_round(store, global_backbone, TrainingConfig(seed=3)).backbone
    assert trained is not None
    version = fine_tuned_version(trained)
    assert version.startswith("mobilefacenet-ft-") and len(version) == len("mobilefacenet-ft-") + 8

    report = adopt_model(store, trained, version)
    assert report.retemplated == tuple(sorted(TRAINED))
    assert report.needs_reenrolment == (RECOGNITION_ONLY,)
    assert (report.templates_added, report.templates_removed) == (EXAMPLES, 0)
    assert report.previous_version == MOBILEFACENET_VERSION
    assert report.weights_file is not None and report.weights_file.stat().st_mode & 0o077 == 0
    assert recognition_version(store) == version

    paths = StorePaths(store)
    with Gallery.open(paths.database, paths.key) as gallery:
        versions = {m.member_id: m.model_versions for m in gallery.members()}
        assert versions[RECOGNITION_ONLY] == (MOBILEFACENET_VERSION,)
        assert all(set(versions[name]) == {MOBILEFACENET_VERSION, version} for name in TRAINED)
        assert gallery.template_count(version) == EXAMPLES

        pipeline = recognition_pipeline(store)
        assert pipeline.model_version == version
        probes = np.stack(
            [
                pipeline.encode(photos[name][-1])[0].embedding
                for name in (*TRAINED, RECOGNITION_ONLY)
            ]
        )
        matches = gallery.identify(probes, pipeline.model_version, threshold=0.4)
    assert [m.member_id for m in matches[:-1]] == list(TRAINED)
    assert matches[-1].member_id != RECOGNITION_ONLY  # no new-model template: re-enrol

    # Adopting the same model again changes nothing.
    repeat = adopt_model(store, trained, version)
    assert (repeat.templates_added, repeat.templates_removed) == (EXAMPLES, EXAMPLES)
    assert repeat.previous_version == MOBILEFACENET_VERSION
    with Gallery.open(paths.database, paths.key) as gallery:
        assert gallery.template_count(version) == EXAMPLES
