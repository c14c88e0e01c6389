"""Enrolment: from a consenting member's photos to sealed templates in the gallery.

Each photo is judged on its own: an unreadable file, a photo with no face and a photo in which
more than one person is prominent are rejected with the reason, and the others still count.
A face counts as prominent when its box is at least half as wide as the largest face's box:
people far behind the member are tolerated, a second person beside the member is not, because
then nobody can say whose template it would be.

The member, their consent and their templates are written in one transaction
(:meth:`Gallery.enrol`), after every argument was checked: if no photo is usable, or the consent
terms are invalid, nothing at all is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from loyalnet.errors import LoyalnetError
from store_node.config import StoreConfig
from store_node.face import FacePipeline, ImageError, load_image
from store_node.face.detector import Face
from store_node.face.images import ImageSource, describe_source
from store_node.gallery import Consent, Gallery, Purpose

PROMINENT_WIDTH_RATIO = 0.5


class EnrolmentError(LoyalnetError):
    """The member could not be enrolled; nothing was written."""


@dataclass(frozen=True)
class PhotoOutcome:
    """What happened to one enrolment photo."""

    source: str
    accepted: bool
    reason: str  # empty when accepted


@dataclass(frozen=True)
class EnrolmentRequest:
    """Who is enrolled and what they agreed to."""

    member_id: str
    purposes: frozenset[Purpose]
    policy_version: str
    retention_days: int
    display_name: str | None = None
    tier: str | None = None

    @classmethod
    def under(
        cls,
        config: StoreConfig,
        member_id: str,
        purposes: frozenset[Purpose],
        display_name: str | None = None,
        tier: str | None = None,
    ) -> EnrolmentRequest:
        """A request on the store's consent terms (its policy version and retention)."""
        return cls(
            member_id=member_id,
            purposes=purposes,
            policy_version=config.policy_version,
            retention_days=config.retention_days,
            display_name=display_name,
            tier=tier,
        )


@dataclass(frozen=True)
class EnrolmentReport:
    """The outcome of one enrolment."""

    member_id: str
    photos: list[PhotoOutcome]
    templates_added: int
    crops_stored: int
    consent: Consent


def prominent_faces(faces: Sequence[Face]) -> list[Face]:
    """The faces at least ``PROMINENT_WIDTH_RATIO`` as wide as the widest one."""
    if not faces:
        return []
    widest = max(face.box[2] - face.box[0] for face in faces)
    return [face for face in faces if face.box[2] - face.box[0] >= PROMINENT_WIDTH_RATIO * widest]


def enrol_member(
    gallery: Gallery,
    pipeline: FacePipeline,
    request: EnrolmentRequest,
    photos: Sequence[ImageSource],
) -> EnrolmentReport:
    """Enrol ``request.member_id`` from ``photos``.

    Raises:
        EnrolmentError: when the consent lacks ``recognition`` or no photo is usable; in both
            cases the gallery is unchanged.
    """
    if Purpose.RECOGNITION not in request.purposes:
        raise EnrolmentError(
            f"member {request.member_id} has not consented to 'recognition', which enrolment "
            "needs; record consent with --consent recognition[,model_improvement]."
        )
    outcomes: list[PhotoOutcome] = []
    crops: list[np.ndarray] = []
    for photo in photos:
        outcome, crop = _judge_photo(pipeline, photo)
        outcomes.append(outcome)
        if crop is not None:
            crops.append(crop)
    if not crops:
        reasons = "; ".join(f"{o.source}: {o.reason}" for o in outcomes) or "no photos given"
        raise EnrolmentError(
            f"no usable photo of member {request.member_id} ({reasons}); nothing was enrolled."
        )
    return enrol_aligned(gallery, pipeline, request, np.stack(crops), outcomes)


def enrol_aligned(
    gallery: Gallery,
    pipeline: FacePipeline,
    request: EnrolmentRequest,
    crops: np.ndarray,
    photos: Sequence[PhotoOutcome] = (),
) -> EnrolmentReport:
    """Enrol ``request.member_id`` from faces already found and aligned.

    The second half of :func:`enrol_member`, for callers that align the photos themselves
    (the research simulation aligns every photo once). The member, the consent, the templates
    and (if consent allows) the crops are written in one transaction.

    Args:
        crops: (K, 112, 112, 3) uint8 aligned crops, K >= 1.
        photos: what happened to each photo, for the report.

    Raises:
        EnrolmentError: the consent lacks ``recognition`` or there is no crop; the gallery is
            unchanged.
        GalleryError: the gallery refused the enrolment (e.g. a bad retention); unchanged.
    """
    if Purpose.RECOGNITION not in request.purposes or len(crops) == 0:
        raise EnrolmentError(
            f"member {request.member_id} needs consent to 'recognition' and at least one face "
            "to be enrolled; nothing was enrolled."
        )
    embeddings = pipeline.embed(crops)
    enrolled = gallery.enrol(
        request.member_id,
        request.display_name,
        request.tier,
        request.purposes,
        policy_version=request.policy_version,
        retention_days=request.retention_days,
        embeddings=embeddings,
        model_version=pipeline.model_version,
        crops=crops,
    )
    return EnrolmentReport(
        member_id=request.member_id,
        photos=list(photos),
        templates_added=enrolled.templates_added,
        crops_stored=enrolled.crops_stored,
        consent=enrolled.consent,
    )


def _judge_photo(
    pipeline: FacePipeline, photo: ImageSource
) -> tuple[PhotoOutcome, np.ndarray | None]:
    source = describe_source(photo)
    try:
        image = load_image(photo)
    except ImageError as err:
        return PhotoOutcome(source, False, f"unreadable: {err}"), None
    faces = prominent_faces(pipeline.detect(image))
    if not faces:
        return PhotoOutcome(source, False, "no face found"), None
    if len(faces) > 1:
        reason = f"{len(faces)} faces: use a photo that shows the member alone"
        return PhotoOutcome(source, False, reason), None
    crop = pipeline.align(image, faces)[0]
    return PhotoOutcome(source, True, ""), crop
