"""How well a store recognises: rank-1 and TAR on its members' held-out photos, strangers
accepted."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from loyalnet_cli.demo.stores import DemoStore, Photo
from store_node.bench.verification import tar_at_far
from store_node.face import FacePipeline, ImageError
from store_node.gallery import EMBEDDING_DIM, Gallery
from store_node.gallery.open_set import binomial_interval
from store_node.threshold import OperatingThreshold


@dataclass(frozen=True)
class StoreScore:
    """One store's recognition, at the threshold of its target FPIR.

    Attributes:
        rank1: share of held-out member photos identified as the right member, in [0, 1];
            a photo with no face found or answered "unknown" counts as a miss.
        probes: held-out member photos tried.
        strangers_accepted: stranger photos wrongly identified as some member.
        strangers: stranger photos tried.
        threshold: cosine similarity threshold used.
        threshold_set_by: "reference", "own camera" or "camera-adjusted reference"
            (``store_node.threshold``).
        target_fpir: the FPIR the store promises at ``threshold``.
        tar_at_far_1e_2: true accept rate at FAR 1e-2 over every pair of a held-out member
            photo and a gallery template (genuine when both are the same member's), in [0, 1];
            None when the gallery has fewer than two members.
    """

    rank1: float
    probes: int
    strangers_accepted: int
    strangers: int
    threshold: float
    threshold_set_by: str
    target_fpir: float
    tar_at_far_1e_2: float | None

    @property
    def fpir(self) -> float:
        """Measured FPIR: the share of strangers wrongly identified as some member."""
        return self.strangers_accepted / self.strangers if self.strangers else 0.0

    def fpir_interval(self) -> tuple[float, float]:
        """The 95% (Clopper-Pearson) interval of the measured FPIR: what so few strangers show."""
        return binomial_interval(self.strangers_accepted, max(1, self.strangers))


def score_store(
    store: DemoStore, gallery: Gallery, pipeline: FacePipeline, threshold: OperatingThreshold
) -> StoreScore:
    """Identify every probe and stranger photo of ``store`` against ``gallery``.

    Each photo is encoded once (its largest face, as identification takes it); the probes'
    embeddings serve both rank-1 and TAR.
    """
    model = pipeline.model_version
    probes = [
        (member.member_id, _largest_face(pipeline, photo))
        for member in store.members
        for photo in member.probes
    ]
    found = [(whose, vector) for whose, vector in probes if vector is not None]
    matches = gallery.identify(_stacked([v for _, v in found]), model, threshold.value)
    correct = sum(
        match.member_id == whose for (whose, _), match in zip(found, matches, strict=True)
    )
    walk_ins = [_largest_face(pipeline, photo) for photo in store.strangers]
    seen = _stacked([vector for vector in walk_ins if vector is not None])
    accepted = sum(
        match.member_id is not None for match in gallery.identify(seen, model, threshold.value)
    )
    return StoreScore(
        rank1=correct / len(probes) if probes else 0.0,
        probes=len(probes),
        strangers_accepted=accepted,
        strangers=len(store.strangers),
        threshold=threshold.value,
        threshold_set_by=threshold.governed_by,
        target_fpir=threshold.target_fpir,
        tar_at_far_1e_2=_tar_at_far(found, gallery, model, 1e-2),
    )


def _largest_face(pipeline: FacePipeline, photo: Photo) -> NDArray[np.float32] | None:
    """The embedding of the photo's largest face; None without a face (counted as a miss)."""
    try:
        found = pipeline.encode(photo)
    except ImageError:
        return None
    return found[0].embedding if found else None


def _stacked(vectors: list[NDArray[np.float32]]) -> NDArray[np.float32]:
    return np.stack(vectors) if vectors else np.zeros((0, EMBEDDING_DIM), dtype=np.float32)


def _tar_at_far(
    probes: list[tuple[str, NDArray[np.float32]]], gallery: Gallery, model: str, far: float
) -> float | None:
    owners, templates = gallery.searchable_templates(model)
    if not probes or len(set(owners)) < 2:
        return None
    scores = _stacked([vector for _, vector in probes]) @ templates.T
    same = np.asarray([whose for whose, _ in probes])[:, None] == np.asarray(owners)[None, :]
    return tar_at_far(scores.ravel(), same.ravel(), far)
