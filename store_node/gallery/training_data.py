"""What a store may train on: the enrolment crops of members who consented to model improvement.

A member counts when the consent in force at ``now`` (see :mod:`.consent`) includes
``model_improvement`` and they have at least one stored crop. Crops are kept only under that
consent, but a consent can expire with its crops still stored; those crops are not used (and
``Gallery.purge_expired`` deletes them). Members with recognition-only consent have no crops and
contribute nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select

from store_node.gallery import sealing
from store_node.gallery.consent import Purpose
from store_node.gallery.errors import TamperedDataError
from store_node.gallery.gallery import Gallery
from store_node.gallery.inputs import CROP_SHAPE, resolve_now
from store_node.gallery.models import EnrolmentCropRow


@dataclass(frozen=True, eq=False)
class TrainingSet:
    """A store's training examples, opened (decrypted) in memory only.

    Attributes:
        crops: (N, 112, 112, 3) uint8 RGB aligned crops, grouped by member in ``member_ids``
            order, each member's crops in the order they were stored.
        labels: (N,) int64; ``labels[i]`` indexes ``member_ids``.
        member_ids: the consenting members with crops, sorted; every index has >= 1 crop.
    """

    crops: NDArray[np.uint8]
    labels: NDArray[np.int64]
    member_ids: list[str]

    @property
    def examples(self) -> int:
        """N, the number of crops."""
        return int(self.labels.shape[0])

    @property
    def members(self) -> int:
        """The number of members (classes)."""
        return len(self.member_ids)


def consenting_members(gallery: Gallery, now: datetime | None = None) -> list[str]:
    """Sorted ids of members whose consent in force at ``now`` allows model improvement."""
    now = resolve_now(now)
    return [
        summary.member_id
        for summary in gallery.members(now)
        if Purpose.MODEL_IMPROVEMENT in summary.purposes
    ]


def training_examples(gallery: Gallery, now: datetime | None = None) -> TrainingSet:
    """The opened crops and labels of every member who may be trained on at ``now``.

    Raises:
        TamperedDataError: a stored crop does not open for its member (altered or moved).
    """
    allowed = set(consenting_members(gallery, now))
    # Package-internal access: the gallery's modules share its session and key.
    with gallery._session(write=False) as session:
        rows = session.execute(
            select(EnrolmentCropRow.id, EnrolmentCropRow.member_id, EnrolmentCropRow.sealed_crop)
            .where(EnrolmentCropRow.member_id.in_(allowed))
            .order_by(EnrolmentCropRow.member_id, EnrolmentCropRow.id)
        ).all()
    # Built from the rows actually read, so a member erased since the consent check gets no
    # empty class.
    member_ids = sorted({member for _, member, _ in rows})
    index = {member: i for i, member in enumerate(member_ids)}
    crops = np.empty((len(rows), *CROP_SHAPE), dtype=np.uint8)
    labels = np.empty(len(rows), dtype=np.int64)
    for i, (crop_id, member, sealed) in enumerate(rows):
        try:
            crops[i] = sealing.open_crop(gallery._key, member, sealed)
        except TamperedDataError as error:
            raise TamperedDataError(
                f"enrolment crop {crop_id} of member {member} failed its integrity check (it "
                "was altered or moved to another member); restore the gallery from backup."
            ) from error
        labels[i] = index[member]
    return TrainingSet(crops=crops, labels=labels, member_ids=member_ids)
