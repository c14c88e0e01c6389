"""The decision threshold of a store: strict enough for strangers in general and under its camera.

A probe from a stranger is compared with every template of the gallery, so the chance that at
least one comparison clears the threshold grows with the gallery. The store keeps a target
false-positive identification rate (FPIR) and takes the stricter of two thresholds that each
keep it:

1. **reference**: impostor scores of many strangers on clean photos, scaled to the gallery's
   template count (``store_node.gallery.calibration``). The scores are the store's own
   calibration (``loyalnet store calibrate``) when it was made with the model the store
   recognises with, else the default shipped for that model (``store_node/calibration/``),
   measured on LFW people with a single photo, i.e. people no store enrols;
2. **own camera**: the store's members searched against each other, member by member
   (``store_node.gallery.open_set``). They were enrolled through the store's own camera, so a
   camera that makes faces alike raises these scores as it raises a walk-in's.

Why the stricter of the two, and no tail model beyond the own sample: the reference has millions
of scores but on the wrong camera; the own sample is on the right camera but, in a small store,
holds a few hundred scores, so the threshold it supports is its highest score (flagged as not
reliable). Extrapolating that tail with a fitted model (an exponential fit to its highest
scores, peaks over a threshold) was dominated by sampling noise on the demo's 12-member
stores: on the clean store it cost up to 12 points of rank-1 for strangers the reference
already kept out. NIST FRTE 1:N practice sets thresholds empirically from non-mated searches
for the same reason. As a store grows, its own sample grows with the square of its members
and its own threshold becomes exact.

The threshold is computed from the gallery as it is at the moment of the decision, so the
store re-calibrates by itself after every enrolment, erasure or model adoption.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from loyalnet.errors import LoyalnetError
from store_node.datasets.lfw import lfw_people
from store_node.face import FacePipeline, ImageError, load_image
from store_node.gallery import Gallery, ImpostorScores, Threshold, impostor_scores_from_embeddings
from store_node.gallery.calibration import threshold_for_fpir
from store_node.gallery.open_set import (
    CONFIDENCE,
    FpirEstimate,
    OwnCameraSample,
    estimate_fpir,
    own_camera_sample,
)

DEFAULT_CALIBRATION_PEOPLE = 1500


def default_impostor_scores(model_version: str) -> ImpostorScores:
    """The impostor scores shipped for ``model_version``.

    Raises:
        LoyalnetError: when loyalnet ships none for that model.
    """
    resource = resources.files("store_node.calibration").joinpath(f"{model_version}.json")
    if not resource.is_file():
        raise LoyalnetError(
            f"no default calibration for model {model_version}; "
            "run `loyalnet store calibrate` to measure one."
        )
    return ImpostorScores.from_json(resource.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class OperatingThreshold:
    """The threshold a store decides with, and the two thresholds it is the stricter of.

    Attributes:
        value: cosine similarity; a probe matches a member when its similarity is > value.
        target_fpir: the FPIR the store promises, in (0, 1).
        members: members a probe is searched against.
        reference: the threshold from strangers on clean photos, per template.
        own: the threshold from the store's members through its own camera, per member;
            None when the gallery has fewer than two members.
        sample: the own-camera sample ``own`` was taken from (None with ``own``).
    """

    value: float
    target_fpir: float
    members: int
    reference: Threshold
    own: Threshold | None
    sample: OwnCameraSample | None

    @property
    def governed_by(self) -> str:
        """ "own camera" when the store's own sample set the value, else "reference"."""
        if self.own is not None and self.value == self.own.value != self.reference.value:
            return "own camera"
        return "reference"

    @property
    def reliable(self) -> bool:
        """Whether the sample that set :attr:`value` holds enough scores for the target."""
        governing = self.own if self.governed_by == "own camera" else self.reference
        return governing is not None and governing.reliable

    @property
    def templates(self) -> int:
        """Templates a probe is compared with."""
        return self.reference.comparisons

    def expected_fpir(self, reference_scores: ImpostorScores) -> list[FpirEstimate]:
        """What each sample expects the FPIR to be at :attr:`value` (reference first)."""
        estimates = [estimate_fpir(reference_scores, self.value, self.templates)]
        if self.sample is not None:
            estimates.append(estimate_fpir(self.sample.scores, self.value, self.sample.members))
        return estimates


def calibration_report(threshold: OperatingThreshold, reference: ImpostorScores) -> dict[str, Any]:
    """What ``loyalnet store calibrate --json`` prints: the threshold, the FPIR expected there
    with its interval and what it rests on, and the FNIR it costs on the store's own members.

    The expected FPIR is the worse of the two samples' views: the higher point estimate, and
    the interval from the higher low end to the higher high end.
    """
    estimates = threshold.expected_fpir(reference)
    worst = max(estimates, key=lambda e: e.fpir)
    own = threshold.own
    sample = threshold.sample
    fnir, searches = sample.fnir(threshold.value) if sample is not None else (None, 0)
    return {
        "model_version": reference.model_version,
        "target_fpir": threshold.target_fpir,
        "threshold": round(threshold.value, 4),
        "governed_by": threshold.governed_by,
        "templates": threshold.templates,
        "members": threshold.members,
        "reliable": threshold.reliable,
        "expected_fpir": {
            "estimate": worst.fpir,
            "interval": [max(e.low for e in estimates), max(e.high for e in estimates)],
            "confidence": CONFIDENCE,
            "shown_at_target": all(e.shows(threshold.target_fpir) for e in estimates),
            "rests_on": [
                {
                    "source": e.source,
                    "impostor_scores": e.scores,
                    "above_threshold": e.above,
                    "searched_against": e.comparisons,
                    "per": "template" if e is estimates[0] else "member",
                    "fpir": e.fpir,
                    "interval": [e.low, e.high],
                }
                for e in estimates
            ],
        },
        "reference": {
            "threshold": round(threshold.reference.value, 4),
            "far_per_comparison": threshold.reference.far_per_comparison,
            "reliable": threshold.reference.reliable,
        },
        "own_camera": None
        if own is None
        else {
            "threshold": round(own.value, 4),
            "far_per_member": own.far_per_comparison,
            "reliable": own.reliable,
        },
        # Leave one template out: optimistic against walk-ins on other days (see open_set).
        "fnir": None if fnir is None or searches == 0 else {"rate": fnir, "searches": searches},
    }


def reference_scores(gallery: Gallery, model_version: str) -> ImpostorScores:
    """The clean-photo impostor scores the store uses for ``model_version``: its own
    calibration when made with that model, else the shipped default."""
    calibrated = gallery.calibration()
    if calibrated is not None and calibrated[0].model_version == model_version:
        return calibrated[0]
    return default_impostor_scores(model_version)


def decision_threshold(
    gallery: Gallery, model_version: str, target_fpir: float
) -> OperatingThreshold:
    """The threshold that keeps this gallery's FPIR at ``target_fpir``, now."""
    owners, templates = gallery.searchable_templates(model_version)
    return operating_threshold(
        reference_scores(gallery, model_version), templates, owners, target_fpir
    )


def operating_threshold(
    reference: ImpostorScores,
    templates: np.ndarray,
    owners: Sequence[str],
    target_fpir: float,
) -> OperatingThreshold:
    """The stricter of the reference and own-camera thresholds for this gallery.

    Args:
        templates: (N, 128) the searchable templates, grouped by ``owners`` (sorted).
    """
    general = threshold_for_fpir(reference, target_fpir, max(1, len(owners)))
    sample = own_camera_sample(templates, owners, reference.model_version)
    own = None if sample is None else threshold_for_fpir(sample.scores, target_fpir, sample.members)
    if own is None:
        value = general.value
    elif own.reliable and not general.reliable:
        # A big gallery asks the reference for a rate below 1 / its pairs: clamped to its highest
        # score, it says nothing, while the store's own sample (growing with the square of its
        # members) measures that rate.
        value = own.value
    else:
        value = max(general.value, own.value)
    members = len(set(owners))
    return OperatingThreshold(value, target_fpir, members, general, own, sample)


def calibration_people(
    home: Path | None = None, limit: int = DEFAULT_CALIBRATION_PEOPLE
) -> dict[str, list[Path]]:
    """Strangers for calibration: LFW people with exactly one photo, the first ``limit`` by name.

    Loyalty demos and benchmarks enrol LFW people with five or more photos, so these are
    disjoint from every member.
    """
    singles = {name: paths for name, paths in lfw_people(home).items() if len(paths) == 1}
    names = sorted(singles)[:limit]
    return {name: singles[name] for name in names}


def measure_impostor_scores(
    pipeline: FacePipeline,
    people: Mapping[str, Sequence[Path]],
    source: str,
    progress: Callable[[int, int], None] | None = None,
) -> ImpostorScores:
    """Embed every photo of ``people`` (largest face) and score all cross-person pairs.

    Photos without a face or that cannot be read are skipped.

    Raises:
        LoyalnetError: when fewer than two people give a face.
    """
    photos = [(name, path) for name, paths in people.items() for path in paths]
    embeddings: list[np.ndarray] = []
    identities: list[str] = []
    for done, (name, path) in enumerate(photos, start=1):
        try:
            encodings = pipeline.encode(load_image(path))
        except ImageError:
            encodings = []
        if encodings:
            embeddings.append(encodings[0].embedding)
            identities.append(name)
        if progress is not None:
            progress(done, len(photos))
    if len(set(identities)) < 2:
        raise LoyalnetError(
            f"calibration needs faces of at least two people; {source} gave "
            f"{len(set(identities))}. Point --people at a folder of one sub-folder per person."
        )
    return impostor_scores_from_embeddings(
        np.stack(embeddings), identities, pipeline.model_version, source
    )


def people_from_folder(folder: Path) -> dict[str, list[Path]]:
    """One person per sub-folder of ``folder`` (the LFW and ORL layout); images by extension."""
    if not folder.is_dir():
        raise LoyalnetError(
            f"{folder} is not a folder; give a folder with one sub-folder per person."
        )
    suffixes = {".jpg", ".jpeg", ".png", ".pgm", ".bmp"}
    people = {
        sub.name: sorted(p for p in sub.iterdir() if p.suffix.lower() in suffixes)
        for sub in sorted(folder.iterdir())
        if sub.is_dir()
    }
    return {name: paths for name, paths in people.items() if paths}
