"""How biometrics are sealed: byte layouts and the associated data that binds each value.

The associated data names the kind of value and the row it belongs to, so a sealed value copied
or moved to another member, model version or kind fails to open instead of being misread. Each
field is length-prefixed, so no two different (kind, fields) tuples encode alike.
"""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
from numpy.typing import NDArray

from store_node.gallery.errors import TamperedDataError
from store_node.gallery.inputs import CROP_SHAPE, EMBEDDING_DIM
from store_node.gallery.keyfile import StoreKey

_DOMAIN = b"loyalnet/gallery/v1"
_EMBEDDING_DTYPE = np.dtype("<f4")
_EMBEDDING_BYTES = EMBEDDING_DIM * _EMBEDDING_DTYPE.itemsize
_CROP_BYTES = int(np.prod(CROP_SHAPE))
KEY_CHECK_PLAINTEXT = b"loyalnet gallery key check"
MEMBER_REF_PURPOSE = b"member-ref"


def associated_data(kind: str, *fields: str) -> bytes:
    """The associated data for a value of ``kind`` belonging to ``fields``."""
    out = bytearray(_DOMAIN)
    for field in (kind, *fields):
        encoded = field.encode("utf-8")
        out += len(encoded).to_bytes(4, "big") + encoded
    return bytes(out)


KEY_CHECK_AAD = associated_data("key_check")


def template_aad(member_id: str, model_version: str) -> bytes:
    """Binds a template to its member, its model version and the kind "template"."""
    return associated_data("template", member_id, model_version)


def crop_aad(member_id: str) -> bytes:
    """Binds an enrolment crop to its member and the kind "enrolment_crop"."""
    return associated_data("enrolment_crop", member_id)


def seal_embedding(
    key: StoreKey, member_id: str, model_version: str, embedding: NDArray[np.float32]
) -> bytes:
    """One (128,) embedding sealed as little-endian float32: 512 + 28 bytes."""
    plaintext = np.ascontiguousarray(embedding, dtype=_EMBEDDING_DTYPE).tobytes()
    return key.seal(plaintext, template_aad(member_id, model_version))


def open_embedding(
    key: StoreKey, member_id: str, model_version: str, sealed: bytes
) -> NDArray[np.float32]:
    """The (128,) float32 embedding in ``sealed``.

    Raises:
        TamperedDataError: when the value does not open for this member and model version.
    """
    plaintext = key.open(sealed, template_aad(member_id, model_version))
    if len(plaintext) != _EMBEDDING_BYTES:
        raise TamperedDataError(
            f"a template of member {member_id} holds {len(plaintext)} bytes, not "
            f"{_EMBEDDING_BYTES}; restore the gallery from backup."
        )
    return np.frombuffer(plaintext, dtype=_EMBEDDING_DTYPE).astype(np.float32)


def seal_crop(key: StoreKey, member_id: str, crop: NDArray[np.uint8]) -> bytes:
    """One (112, 112, 3) uint8 crop sealed in row-major order: 37632 + 28 bytes."""
    return key.seal(np.ascontiguousarray(crop, dtype=np.uint8).tobytes(), crop_aad(member_id))


def open_crop(key: StoreKey, member_id: str, sealed: bytes) -> NDArray[np.uint8]:
    """The (112, 112, 3) uint8 crop in ``sealed``.

    Raises:
        TamperedDataError: when the value does not open for this member.
    """
    plaintext = key.open(sealed, crop_aad(member_id))
    if len(plaintext) != _CROP_BYTES:
        raise TamperedDataError(
            f"an enrolment crop of member {member_id} holds {len(plaintext)} bytes, not "
            f"{_CROP_BYTES}; restore the gallery from backup."
        )
    return np.frombuffer(plaintext, dtype=np.uint8).reshape(CROP_SHAPE).copy()


def member_ref(ref_key: bytes, member_id: str) -> str:
    """The pseudonym of ``member_id`` in the audit trail: hex HMAC-SHA256 under ``ref_key``.

    ``ref_key`` is ``StoreKey.derive(MEMBER_REF_PURPOSE)``: only the key holder can tell whether
    a record is about a given member, and nobody can read the id back out.
    """
    return hmac.new(ref_key, member_id.encode("utf-8"), hashlib.sha256).hexdigest()
