"""How well a store recognises: rank-1 on its members' held-out photos, strangers accepted."""

from __future__ import annotations

from dataclasses import dataclass

from loyalnet_cli.demo.stores import DemoStore
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
    """

    rank1: float
    probes: int
    strangers_accepted: int
    strangers: int
    threshold: float
    threshold_set_by: str
    target_fpir: float

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
    )
