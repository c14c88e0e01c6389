"""Which model a store recognises with, and the switch to a new one in a single transaction.

The store meta entry ``recognition_model`` holds a JSON object: the model version, the weight
file (relative to the store folder) and the sha256 digest of its tensors. No entry means the
pretrained shared weights. The entry changes only together with the templates of the new
version, in one SQLite transaction, so the gallery never names a model whose templates are
half written: a crash leaves the old model and its templates fully in place.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import delete, func, select

from store_node.gallery import sealing
from store_node.gallery.errors import DamagedGalleryError
from store_node.gallery.gallery import Gallery
from store_node.gallery.inputs import as_embeddings, check_label, resolve_now
from store_node.gallery.models import EnrolmentCropRow, MemberRow, StoreMetaRow, TemplateRow
from store_node.gallery.records import AuditAction

META_RECOGNITION_MODEL = "recognition_model"


@dataclass(frozen=True)
class RecognitionModel:
    """The model a store recognises with, when it is not the pretrained default.

    Attributes:
        model_version: the name every template of this model carries.
        weights_file: the weight file, relative to the store folder, e.g.
            "models/mobilefacenet-ft-1a2b3c4d.pt".
        sha256: hex digest of the weight tensors (``store_node.training.backbone.state_digest``),
            checked whenever the file is loaded.
        adopted_at: when the store switched to it (UTC).
        previous_version: the model the store recognised with before; its templates are kept
            for members who were re-templated, so the store can switch back.
    """

    model_version: str
    weights_file: str
    sha256: str
    adopted_at: datetime
    previous_version: str

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "model_version": self.model_version,
                "weights_file": self.weights_file,
                "sha256": self.sha256,
                "adopted_at": self.adopted_at.isoformat(),
                "previous_version": self.previous_version,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, payload: bytes) -> RecognitionModel:
        """Raises DamagedGalleryError when the entry cannot be read."""
        try:
            data = json.loads(payload)
            return cls(
                model_version=str(data["model_version"]),
                weights_file=str(data["weights_file"]),
                sha256=str(data["sha256"]),
                adopted_at=datetime.fromisoformat(data["adopted_at"]),
                previous_version=str(data["previous_version"]),
            )
        except (ValueError, TypeError, KeyError) as error:
            raise DamagedGalleryError(
                "the gallery's recognition_model entry cannot be read; adopt the model again "
                "or restore the gallery from backup."
            ) from error


@dataclass(frozen=True)
class SwitchCounts:
    """What ``switch_recognition_model`` wrote.

    Attributes:
        members: members who got templates of the new version.
        templates_added: templates of the new version written.
        templates_removed: templates deleted (earlier copies of the new version, and versions
            not kept).
    """

    members: tuple[str, ...]
    templates_added: int
    templates_removed: int


def recognition_model(gallery: Gallery) -> RecognitionModel | None:
    """The store's recognition model, or None for the pretrained default."""
    # Package-internal access: the gallery's modules share its session and key.
    with gallery._session(write=False) as session:
        payload = session.scalar(
            select(StoreMetaRow.value).where(StoreMetaRow.key == META_RECOGNITION_MODEL)
        )
    return None if payload is None else RecognitionModel.from_json(payload)


def switch_recognition_model(
    gallery: Gallery,
    model: RecognitionModel,
    templates: Mapping[str, NDArray[np.float32]],
    now: datetime | None = None,
) -> SwitchCounts:
    """Store new-version templates and make ``model`` the recognition model, atomically.

    For each member in ``templates`` who still exists and still has enrolment crops (they were
    computed from them): delete any earlier templates of ``model.model_version`` (so a retried
    switch does not duplicate them), add the new ones, delete their templates of versions
    other than the new one and ``model.previous_version``, and write an audit record. Other
    members are untouched.

    Args:
        templates: member id -> (K, 128) embeddings of ``model.model_version``.

    Returns:
        What was written.
    """
    version = check_label(model.model_version, "the model version")
    kept = {model.previous_version, version}
    vectors = {member: as_embeddings(rows) for member, rows in templates.items()}
    now = resolve_now(now)
    added = removed = 0
    switched: list[str] = []
    with gallery._session(write=True) as session:
        existing = set(session.scalars(select(MemberRow.member_id)))
        with_crops = set(session.scalars(select(EnrolmentCropRow.member_id).distinct()))
        for member in sorted(vectors):
            if member not in existing or member not in with_crops:
                continue
            outdated = (TemplateRow.member_id == member) & (
                (TemplateRow.model_version == version) | TemplateRow.model_version.not_in(kept)
            )
            gone = int(
                session.scalar(select(func.count()).select_from(TemplateRow).where(outdated)) or 0
            )
            session.execute(delete(TemplateRow).where(outdated))
            session.add_all(
                TemplateRow(
                    member_id=member,
                    model_version=version,
                    sealed_embedding=sealing.seal_embedding(gallery._key, member, version, vector),
                    created_at=now,
                )
                for vector in vectors[member]
            )
            details = {
                "model_version": version,
                "templates_added": len(vectors[member]),
                "templates_removed": gone,
                "crops_stored": 0,
                "retemplated": 1,
            }
            gallery._audit(session, AuditAction.ENROL, member, details, now)
            added += len(vectors[member])
            removed += gone
            switched.append(member)
        session.merge(StoreMetaRow(key=META_RECOGNITION_MODEL, value=model.to_json()))
    return SwitchCounts(tuple(switched), added, removed)
