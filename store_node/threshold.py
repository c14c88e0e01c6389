"""The decision threshold of a store: strict enough for strangers in general and under its camera.

A probe from a stranger is compared with every template of the gallery, so the chance that at
least one comparison clears the threshold grows with the gallery. The store keeps a target
false-positive identification rate (FPIR) and takes the strictest of three thresholds that each
keep it:

1. **reference**: impostor scores of many strangers on clean photos, scaled to the gallery's
   template count (``store_node.gallery.calibration``). The scores are the store's own
   calibration (``loyalnet store calibrate``) when it was made with the model the store
   recognises with, else the default shipped for that model (``store_node/calibration/``),
   measured on LFW people with a single photo, i.e. people no store enrols;
2. **own camera**: the store's members searched against each other, member by member
   (``store_node.gallery.open_set``). They were enrolled through the store's own camera, so a
   camera that makes faces alike raises these scores as it raises a walk-in's;
3. **camera-adjusted reference**: the reference threshold moved by how much higher the store's
   own impostor scores lie than the reference's, measured where the own sample is solid::

       t = Q_ref(far) + (Q_own(p) - Q_ref(p)),   p = 25 / n_own  (template-level rates)

   ``Q`` is the score exceeded at that per-template rate, ``far`` the per-template rate the
   target FPIR allows. The own sample says how far the camera moves impostor scores (its 25th
   highest of ``n_own`` scores is within about 20% in rate); the reference, with a hundred
   times more scores, says how the tail falls off beyond that.

Why the shift. A small store's own sample holds a few thousand template-level scores, so at the
rate a 1% FPIR asks of a 70-template gallery (1.4e-4) it has no score at all; its own threshold
is then its highest score and can lie far too low. Measured on the simulations' low-resolution
store (18 members, pretrained model, 500 strangers): reference 0.402 lets 5.6% of strangers in,
the own camera's highest score 0.378 is lower still, and the shifted reference 0.452 lets 1.0%
in (the strangers' own 1% point is 0.447). At measurable rates the own sample's template-level
rate matched the strangers' within 30% under every simulated camera, the reference's did not
(5x too low under low resolution, 100x under motion blur). A fitted tail model of the own
sample alone (an exponential over its highest scores) was tried first and dropped: on the
demo's 12-member stores its extrapolation was dominated by sampling noise and cost up to 12
points of rank-1 on the clean store. NIST FRTE 1:N practice sets thresholds empirically from
non-mated searches; the shift keeps that (both quantiles are empirical) and borrows only the
tail's shape from the larger sample.

What it does not correct: a model fine-tuned on these very members scores them apart more than
it scores strangers, so after such training the own sample understates the camera.

The threshold is computed from the gallery as it is at the moment of the decision, so the
store re-calibrates by itself after every enrolment, erasure or model adoption.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
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
SHIFT_RANK = 25
"""The own sample's score of this rank (1 = highest) is where the camera's shift is measured."""
REFERENCE = "reference"
OWN_CAMERA = "own camera"
CAMERA_ADJUSTED = "camera-adjusted reference"


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
class CameraShift:
    """How much higher the store's own impostor scores lie than the reference's.

    Attributes:
        value: the reference threshold moved by ``shift`` (cosine similarity).
        shift: own minus reference score at the same per-template rate ``rate``.
        rate: the per-template impostor rate where both were read (``SHIFT_RANK / own_scores``).
        own_scores: template-level own impostor scores the rate rests on.
    """

    value: float
    shift: float
    rate: float
    own_scores: int


def camera_shift(
    reference: ImpostorScores, sample: OwnCameraSample, general: Threshold
) -> CameraShift | None:
    """The reference threshold ``general`` moved by the own camera's shift (module docstring).

    None when the own sample is too small (fewer than ``4 * SHIFT_RANK`` template-level scores)
    or the rate lies beyond what the reference or the kept tail can read.
    """
    pairs = sample.template_pairs
    if pairs < 4 * SHIFT_RANK:
        return None
    # In a big gallery 25 / n is below the reference's resolution: read both at a rank the
    # reference can show (the own sample is then exact at the target itself anyway).
    rank = max(SHIFT_RANK, math.ceil(SHIFT_RANK * pairs / reference.pairs))
    own_at = sample.template_score_at_rank(rank)
    if own_at is None:
        return None
    rate = rank / pairs
    reference_at = reference.score_at_rank(
        max(1, min(reference.pairs, round(rate * reference.pairs)))
    )
    shift = own_at - reference_at
    return CameraShift(general.value + shift, shift, rate, pairs)


@dataclass(frozen=True)
class OperatingThreshold:
    """The threshold a store decides with, and the thresholds it is the strictest of.

    Attributes:
        value: cosine similarity; a probe matches a member when its similarity is > value.
        target_fpir: the FPIR the store promises, in (0, 1).
        members: members a probe is searched against.
        reference: the threshold from strangers on clean photos, per template.
        own: the threshold from the store's members through its own camera, per member;
            None when the gallery has fewer than two members.
        sample: the own-camera sample ``own`` was taken from (None with ``own``).
        adjusted: the camera-adjusted reference; None when the own sample is too small.
    """

    value: float
    target_fpir: float
    members: int
    reference: Threshold
    own: Threshold | None
    sample: OwnCameraSample | None
    adjusted: CameraShift | None = None

    @property
    def governed_by(self) -> str:
        """Which threshold set the value: "reference", "own camera" or
        "camera-adjusted reference"."""
        if self.value == self.reference.value:
            return REFERENCE
        if self.own is not None and self.value == self.own.value:
            return OWN_CAMERA
        return CAMERA_ADJUSTED

    @property
    def reliable(self) -> bool:
        """Whether the sample that set :attr:`value` holds enough scores for the target (the
        camera-adjusted reference rests on the reference's tail)."""
        governing = self.own if self.governed_by == OWN_CAMERA else self.reference
        return governing is not None and governing.reliable

    @property
    def templates(self) -> int:
        """Templates a probe is compared with."""
        return self.reference.comparisons

    def expected_fpir(self, reference_scores: ImpostorScores) -> list[FpirEstimate]:
        """What each sample expects the FPIR to be at :attr:`value`: the reference, the own
        sample, and the reference read at ``value - shift`` (when there is a shift)."""
        estimates = [estimate_fpir(reference_scores, self.value, self.templates)]
        if self.sample is not None:
            estimates.append(estimate_fpir(self.sample.scores, self.value, self.sample.members))
        if self.adjusted is not None:
            shifted = estimate_fpir(
                reference_scores, self.value - self.adjusted.shift, self.templates
            )
            source = f"{shifted.source}, shifted by {self.adjusted.shift:+.3f} to the own camera"
            estimates.append(replace(shifted, source=source))
        return estimates


def calibration_report(threshold: OperatingThreshold, reference: ImpostorScores) -> dict[str, Any]:
    """What ``loyalnet store calibrate --json`` prints: the threshold, the FPIR expected there
    with its interval and what it rests on, and the FNIR it costs on the store's own members.

    The expected FPIR is the worse of the two samples' views: the higher point estimate, and
    the interval from the higher low end to the higher high end.
    """
    estimates = threshold.expected_fpir(reference)
    worst = max(estimates, key=lambda e: e.fpir)
    per = ["template", "member", "template"] if threshold.sample is not None else ["template"]
    own = threshold.own
    adjusted = threshold.adjusted
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
                    "per": unit,
                    "fpir": e.fpir,
                    "interval": [e.low, e.high],
                }
                for e, unit in zip(estimates, per, strict=False)
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
        "camera_adjusted": None
        if adjusted is None
        else {
            "threshold": round(adjusted.value, 4),
            "shift": round(adjusted.shift, 4),
            "measured_at_rate": adjusted.rate,
            "own_scores": adjusted.own_scores,
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
    """The strictest of the reference, own-camera and camera-adjusted thresholds.

    Args:
        templates: (N, 128) the searchable templates, grouped by ``owners`` (sorted).
    """
    general = threshold_for_fpir(reference, target_fpir, max(1, len(owners)))
    sample = own_camera_sample(templates, owners, reference.model_version)
    own = None if sample is None else threshold_for_fpir(sample.scores, target_fpir, sample.members)
    adjusted = None if sample is None else camera_shift(reference, sample, general)
    if own is None:
        value = general.value
    elif own.reliable and not general.reliable:
        # A big gallery asks the reference for a rate below 1 / its pairs: clamped to its highest
        # score, it says nothing (nor does its shift), while the store's own sample (growing
        # with the square of its members) measures that rate.
        value = own.value
        adjusted = None
    else:
        value = max(general.value, own.value, adjusted.value if adjusted else general.value)
    members = len(set(owners))
    return OperatingThreshold(value, target_fpir, members, general, own, sample, adjusted)


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
