"""How good a face model is, for the simulation: the metrics of ``results.json``.

Every model is judged on the same aligned crops (:mod:`simulations.photos`), embedded with the
model under test:

- **rank-1** (per store): each held-out photo of a member is searched in the store's gallery
  (its members' enrolment crops); it counts when the best-scoring member is the right one. A
  member's score is its best template's cosine similarity, as in the store's gallery. A photo
  in which no face was found counts as a miss.
- **FNIR at FPIR = 1e-2** (per store): the threshold t is set so that at most 1% of the
  store's stranger photos have a best score above t (the same order statistic as
  :func:`store_node.bench.verification.tar_at_far`); FNIR is then the fraction of member photos
  that are not both matched to the right member and above t. A stranger photo without a face
  can never be accepted.
- **FPIR and FNIR at the store's own threshold** (per store): the threshold a real store would
  decide with for the target FPIR (:func:`store_node.threshold.operating_threshold`: the
  stricter of the reference, from ``calibration_people`` strangers on clean photos embedded with
  the model under test, and the store's own members searched against each other). FPIR is the
  share of the store's strangers accepted there, FNIR the share of member photos not matched to
  the right member there: what the store promises against what it delivers.
- **TAR at FAR** (per held-out condition): every pair of photos of the held-out people (no store
  trained on them) under that condition; genuine pairs show the same person.
- **LFW accuracy**: the View 2 10-fold protocol on the pairs in the experiment's folds that show
  no store member: the members were trained on, so their pairs would flatter fine-tuning.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from numpy.typing import NDArray

from simulations.results import StoreMetrics
from store_node.bench.verification import accuracy_at, best_threshold, kfold_accuracy, tar_at_far
from store_node.face.embedder import FaceEmbedder
from store_node.face.weights import EmbedderBackend, prepare_embedder
from store_node.gallery import ImpostorScores, impostor_scores_from_embeddings
from store_node.threshold import operating_threshold
from store_node.training.backbone import load_backbone

Embed = Callable[[NDArray[np.uint8]], NDArray[np.float32]]
"""(N, 112, 112, 3) uint8 crops -> (N, 128) unit-length float32 embeddings."""

TAR_FARS = {"1e-2": 1e-2, "1e-3": 1e-3}
"""The false accept rates TAR is reported at, by their name in results."""

NO_FACE = -1
"""Crop index of a photo in which no face was found."""

EMBED_BATCH = 128


@dataclass(frozen=True)
class StoreTestSet:
    """One store's searches; every number is an index into :attr:`EvaluationSet.crops`.

    Attributes:
        gallery: (G,) enrolment crops; ``gallery_labels`` (G,) their member (0..M-1), sorted.
        probes: (P,) held-out member photos (``NO_FACE`` where none was found);
            ``probe_labels`` (P,) whose photo it is.
        strangers: (S,) photos of people enrolled nowhere (``NO_FACE`` where none was found).
    """

    store_id: str
    gallery: NDArray[np.int64]
    gallery_labels: NDArray[np.int64]
    probes: NDArray[np.int64]
    probe_labels: NDArray[np.int64]
    strangers: NDArray[np.int64]


@dataclass(frozen=True)
class VerificationSet:
    """Photos of held-out people under one condition: ``crops`` (N,) indices, ``people`` (N,)."""

    condition: str
    crops: NDArray[np.int64]
    people: NDArray[np.int64]


@dataclass(frozen=True)
class LfwPairs:
    """View 2 pairs as indices into :attr:`EvaluationSet.lfw_crops`, with label and fold."""

    left: NDArray[np.int64]
    right: NDArray[np.int64]
    same: NDArray[np.bool_]
    folds: NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.same.size)


@dataclass(frozen=True)
class EvaluationSet:
    """Everything a model is judged on: crops, and who is who among them."""

    crops: NDArray[np.uint8]
    stores: tuple[StoreTestSet, ...]
    heldout: tuple[VerificationSet, ...]
    lfw_crops: NDArray[np.uint8]
    lfw: LfwPairs
    fpir: float
    calibration: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def store(self, store_id: str) -> StoreTestSet:
        """The test set of ``store_id``."""
        return next(test for test in self.stores if test.store_id == store_id)


@dataclass(frozen=True)
class ModelScore:
    """What :func:`score_model` measured; see :class:`simulations.results.RoundResult`."""

    stores: dict[str, StoreMetrics]
    tar: dict[str, dict[str, float]]
    lfw_accuracy: float | None


def embedder_for(backbone: Mapping[str, torch.Tensor]) -> Embed:
    """The embedding function of a backbone (a ``backbone_state``), optimised for inference.

    ONNX Runtime when it is installed (it comes with the dev extra that the set-up installs),
    else TorchScript: measured here with two threads, 2.3 against 5.2 ms per crop, and a
    simulation embeds hundreds of thousands of crops. Both give the same embeddings to ~1e-5.
    """
    backend: EmbedderBackend = "onnxruntime" if _has_onnxruntime() else "torch"
    network = prepare_embedder(load_backbone(backbone), backend)
    embedder = FaceEmbedder(network, model_version="simulation", batch_size=EMBED_BATCH)
    return embedder.embed


def _has_onnxruntime() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def score_model(
    embed: Embed,
    evaluation: EvaluationSet,
    *,
    stores: Sequence[str] | None = None,
    heldout: bool = True,
    lfw: bool = True,
) -> ModelScore:
    """Measure one model.

    Args:
        embed: the model's embedding function (:func:`embedder_for`).
        stores: the stores to search in (a local-only model is judged on its own store); None
            is every store.
        heldout: whether to measure TAR on the held-out people (``tar`` is empty if not).
        lfw: whether to measure LFW accuracy (the costliest part: ~7,700 crops for 10 folds).
    """
    chosen = [test for test in evaluation.stores if stores is None or test.store_id in stores]
    verification = evaluation.heldout if heldout else ()
    needed = np.unique(
        np.concatenate(
            [np.concatenate([t.gallery, t.probes, t.strangers]) for t in chosen]
            + [v.crops for v in verification]
            + [evaluation.calibration if chosen else np.zeros(0, dtype=np.int64)]
            + [np.zeros(0, dtype=np.int64)]
        )
    )
    needed = needed[needed != NO_FACE]
    vectors = np.zeros((evaluation.crops.shape[0], 128), dtype=np.float32)
    if needed.size:
        vectors[needed] = embed(evaluation.crops[needed])
    reference = _reference(vectors, evaluation) if chosen else None
    store_metrics = {
        t.store_id: _store_metrics(vectors, t, evaluation.fpir, reference) for t in chosen
    }
    tar = {v.condition: _tar(vectors, v) for v in verification}
    accuracy = _lfw_accuracy(embed, evaluation) if lfw and len(evaluation.lfw) else None
    return ModelScore(store_metrics, tar, accuracy)


def _reference(vectors: NDArray[np.float32], evaluation: EvaluationSet) -> ImpostorScores | None:
    """Impostor scores of the calibration people under the model under test, if there are two."""
    if evaluation.calibration.size < 2:
        return None
    people = [str(i) for i in range(evaluation.calibration.size)]
    return impostor_scores_from_embeddings(
        vectors[evaluation.calibration], people, "simulation", "calibration people"
    )


def _store_metrics(
    vectors: NDArray[np.float32],
    test: StoreTestSet,
    fpir: float,
    reference: ImpostorScores | None,
) -> StoreMetrics:
    best_probe, best_member = _search(vectors, test, test.probes)
    best_stranger, _ = _search(vectors, test, test.strangers)
    right = best_member == test.probe_labels
    ordered = np.sort(best_stranger)[::-1]
    allowed = int(np.floor(fpir * ordered.size + 1e-9))
    threshold = ordered[allowed] if allowed < ordered.size else -np.inf
    hits = right & (best_probe > threshold)
    metrics = StoreMetrics(
        rank1=float(np.mean(right)) if right.size else 0.0,
        fnir_at_fpir=float(1.0 - np.mean(hits)) if hits.size else 1.0,
    )
    if reference is None or test.gallery.size == 0:
        return metrics
    # Zero-padded labels keep the store's owners sorted as the gallery sorts member ids.
    owners = [f"{label:06d}" for label in test.gallery_labels]
    operating = operating_threshold(reference, vectors[test.gallery], owners, fpir)
    found = right & (best_probe > operating.value)
    found_before = right & (best_probe > operating.reference.value)
    return replace(
        metrics,
        operating_threshold=operating.value,
        threshold_set_by=operating.governed_by,
        fpir_measured=float(np.mean(best_stranger > operating.value))
        if best_stranger.size
        else 0.0,
        fnir_at_operating=float(1.0 - np.mean(found)) if found.size else 1.0,
        fnir_at_reference=float(1.0 - np.mean(found_before)) if found.size else 1.0,
    )


def _search(
    vectors: NDArray[np.float32], test: StoreTestSet, photos: NDArray[np.int64]
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Per photo: the best member's score and that member (-inf and -1 without a face)."""
    scores = np.full(photos.size, -np.inf)
    members = np.full(photos.size, -1, dtype=np.int64)
    found = photos != NO_FACE
    if not found.any() or test.gallery.size == 0:
        return scores, members
    similarity = vectors[photos[found]] @ vectors[test.gallery].T
    # gallery_labels is sorted, so each member's templates are one run of columns.
    starts = np.flatnonzero(np.r_[True, np.diff(test.gallery_labels) != 0])
    per_member = np.maximum.reduceat(similarity, starts, axis=1)
    best = np.argmax(per_member, axis=1)
    scores[found] = per_member[np.arange(best.size), best]
    members[found] = test.gallery_labels[starts[best]]
    return scores, members


def _tar(vectors: NDArray[np.float32], heldout: VerificationSet) -> dict[str, float]:
    embeddings = vectors[heldout.crops]
    upper = np.triu_indices(heldout.crops.size, k=1)
    scores = (embeddings @ embeddings.T)[upper]
    same = (heldout.people[:, None] == heldout.people[None, :])[upper]
    return {name: tar_at_far(scores, same, far) for name, far in TAR_FARS.items()}


def _lfw_accuracy(embed: Embed, evaluation: EvaluationSet) -> float:
    pairs = evaluation.lfw
    vectors = embed(evaluation.lfw_crops)
    scores = np.einsum("ij,ij->i", vectors[pairs.left], vectors[pairs.right])
    if np.unique(pairs.folds).size >= 2:
        return kfold_accuracy(scores, pairs.same, pairs.folds)[0]
    # One fold cannot be cross-validated: its own best threshold (slightly optimistic).
    return accuracy_at(scores, pairs.same, best_threshold(scores, pairs.same))
