"""The store's secret CosFace class rows: one sealed 128-float row per member, kept between rounds.

A row is sealed like a template (AES-256-GCM under the store key, 512 + 28 bytes) with
associated data that names the kind "class_weight" and the member, so a row copied to another
member fails to open. Rows exist only for members with enrolment crops: saving skips anyone
else, and the table's trigger (:mod:`.models`) deletes a row with its member's last crop;
erasing the member deletes it through the foreign key, and the erasure's scrub wipes the pages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select

from store_node.gallery import sealing
from store_node.gallery.errors import TamperedDataError
from store_node.gallery.gallery import Gallery
from store_node.gallery.inputs import EMBEDDING_DIM, as_embeddings, check_member_id, resolve_now
from store_node.gallery.models import ClassWeightRow, EnrolmentCropRow

_ROW_DTYPE = np.dtype("<f4")


def class_weight_aad(member_id: str) -> bytes:
    """Binds a class row to its member and the kind "class_weight"."""
    return sealing.associated_data("class_weight", member_id)


def load_class_weights(
    gallery: Gallery, member_ids: Iterable[str]
) -> dict[str, NDArray[np.float32]]:
    """The stored rows of those of ``member_ids`` that have one: id -> (128,) float32 unit row.

    Raises:
        TamperedDataError: a row does not open for its member (altered or moved).
    """
    wanted = {check_member_id(member) for member in member_ids}
    # Package-internal access: the gallery's modules share its session and key.
    with gallery._session(write=False) as session:
        rows = session.execute(select(ClassWeightRow.member_id, ClassWeightRow.sealed_weight)).all()
    loaded: dict[str, NDArray[np.float32]] = {}
    for member, sealed in rows:
        if member not in wanted:
            continue
        try:
            plaintext = gallery._key.open(sealed, class_weight_aad(member))
        except TamperedDataError as error:
            raise TamperedDataError(
                f"the class weight of member {member} failed its integrity check (altered or "
                "moved to another member); delete the class_weights rows to re-initialise "
                "them, or restore the gallery from backup."
            ) from error
        if len(plaintext) != EMBEDDING_DIM * _ROW_DTYPE.itemsize:
            raise TamperedDataError(
                f"the class weight of member {member} holds {len(plaintext)} bytes, not "
                f"{EMBEDDING_DIM * _ROW_DTYPE.itemsize}; restore the gallery from backup."
            )
        loaded[member] = np.frombuffer(plaintext, dtype=_ROW_DTYPE).astype(np.float32)
    return loaded


def save_class_weights(
    gallery: Gallery, rows: Mapping[str, NDArray[np.float32]], now: datetime | None = None
) -> int:
    """Seal and store (insert or replace) each member's row; returns how many were stored.

    Rows are normalised to unit length (the head only uses their direction). Members without
    enrolment crops at the time of writing (erased or withdrawn since training began) are
    skipped, so no row outlives the data it was learnt from.

    Raises:
        InvalidInputError: a row is not 128 finite, non-zero numbers.
    """
    now = resolve_now(now)
    checked = {
        check_member_id(member): as_embeddings(np.asarray(row).reshape(1, -1))[0]
        for member, row in rows.items()
    }
    with gallery._session(write=True) as session:
        with_crops = set(
            session.scalars(
                select(EnrolmentCropRow.member_id)
                .where(EnrolmentCropRow.member_id.in_(checked))
                .distinct()
            )
        )
        for member in sorted(with_crops):
            plaintext = np.ascontiguousarray(checked[member], dtype=_ROW_DTYPE).tobytes()
            session.merge(
                ClassWeightRow(
                    member_id=member,
                    sealed_weight=gallery._key.seal(plaintext, class_weight_aad(member)),
                    updated_at=now,
                )
            )
    return len(with_crops)
