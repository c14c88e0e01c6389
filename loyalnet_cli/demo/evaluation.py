"""How well a store recognises: rank-1 and TAR on its members' held-out photos, strangers
accepted."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from loyalnet_cli.demo.stores import DemoStore
from store_node.bench.verification import tar_at_far
from store_node.face import FacePipeline
from store_node.gallery import Gallery
from store_node.gallery.open_set import binomial_interval
from store_node.identification import identify_photos
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
        threshold_set_by: "reference" or "own camera" (``store_node.threshold``).
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
    """Identify every probe and stranger photo of ``store`` against ``gallery``."""
    correct = probes = 0
    for member in store.members:
        for result in identify_photos(
            gallery, pipeline, member.probes, threshold.value, all_faces=False
        ):
            probes += 1
            correct += bool(result.faces) and result.faces[0].match.member_id == member.member_id
    accepted = 0
    for result in identify_photos(
        gallery, pipeline, store.strangers, threshold.value, all_faces=False
    ):
        accepted += bool(result.faces) and result.faces[0].match.member_id is not None
    return StoreScore(
        rank1=correct / probes if probes else 0.0,
        probes=probes,
        strangers_accepted=accepted,
        strangers=len(store.strangers),
        threshold=threshold.value,
        threshold_set_by=threshold.governed_by,
        target_fpir=threshold.target_fpir,
        tar_at_far_1e_2=_tar_at_far(store, gallery, pipeline, 1e-2),
    )


def _tar_at_far(
    store: DemoStore, gallery: Gallery, pipeline: FacePipeline, far: float
) -> float | None:
    owners, templates = gallery.searchable_templates(pipeline.model_version)
    probes: list[NDArray[np.float32]] = []
    whose: list[str] = []
    for member in store.members:
        for photo in member.probes:
            found = pipeline.encode(photo)
            if found:
                probes.append(found[0].embedding)
                whose.append(member.member_id)
    if not probes or len(set(owners)) < 2:
        return None
    scores = np.stack(probes) @ templates.T
    same = np.asarray(whose)[:, None] == np.asarray(owners)[None, :]
    return tar_at_far(scores.ravel(), same.ravel(), far)
