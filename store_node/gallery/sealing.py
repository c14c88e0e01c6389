"""How personal data is sealed and consent authenticated: byte layouts, associated data, tags.

The associated data names the kind of value and the row it belongs to, so a sealed value copied
or moved to another member, model version or kind fails to open instead of being misread. Each
field is length-prefixed, so no two different (kind, fields) tuples encode alike.

Consent rows are not encrypted (they hold no biometrics, and an auditor must be able to read
what each member agreed to without the key) but authenticated: each row's tag is an HMAC-SHA256,
under a key derived for consent only, over the member id, the row's number in the member's
chain, the previous row's tag, the purposes, the policy version and both instants. The member
row holds a head tag over the chain's length and last tag. So an edited date or purpose, a row
copied to another member, a row inserted, reordered or deleted (say, a withdrawal, which would
revive the older consent) all break the chain, and the gallery then treats the member as having
no consent. Only a rollback of the member row and its consent rows together to an earlier copy
of the same gallery goes unnoticed; that needs state kept outside the store.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime

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
CONSENT_TAG_PURPOSE = b"consent-tag"
_PROFILE_BLOCK = 128  # sealed names are padded to a multiple of this, so length tells little


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


@dataclass(frozen=True)
class Profile:
    """What a member row keeps sealed: the name and tier staff see."""

    display_name: str | None
    tier: str | None


def profile_aad(member_id: str) -> bytes:
    """Binds a member's sealed profile to the member and the kind "member_profile"."""
    return associated_data("member_profile", member_id)


def seal_profile(key: StoreKey, member_id: str, profile: Profile) -> bytes:
    """The profile as JSON, space-padded to a multiple of 128 bytes, sealed for ``member_id``.

    The padding hides a name's exact length; JSON ignores the trailing blanks when read.
    """
    text = json.dumps({"display_name": profile.display_name, "tier": profile.tier})
    plaintext = text.encode("utf-8")
    padded = plaintext + b" " * (-len(plaintext) % _PROFILE_BLOCK)
    return key.seal(padded, profile_aad(member_id))


def open_profile(key: StoreKey, member_id: str, sealed: bytes) -> Profile:
    """The profile in ``sealed``.

    Raises:
        TamperedDataError: when the value does not open for this member or is malformed.
    """
    plaintext = key.open(sealed, profile_aad(member_id))
    try:
        data = json.loads(plaintext.decode("utf-8"))
        name, tier = data["display_name"], data["tier"]
    except (ValueError, TypeError, KeyError) as error:
        raise TamperedDataError(
            f"the name and tier of member {member_id} cannot be read; restore the gallery from "
            "backup."
        ) from error
    if not all(value is None or isinstance(value, str) for value in (name, tier)):
        raise TamperedDataError(
            f"the name and tier of member {member_id} are malformed; restore the gallery from "
            "backup."
        )
    return Profile(display_name=name, tier=tier)


def consent_tag(
    tag_key: bytes,
    member_id: str,
    seq: int,
    previous_tag: bytes,
    purposes: str,
    policy_version: str,
    granted_at: datetime,
    expires_at: datetime,
) -> bytes:
    """The 32-byte tag of a member's ``seq``-th consent (see the module docstring).

    ``tag_key`` is ``StoreKey.derive(CONSENT_TAG_PURPOSE)``; instants are UTC.
    """
    message = associated_data(
        "consent",
        member_id,
        str(seq),
        previous_tag.hex(),
        purposes,
        policy_version,
        granted_at.astimezone(UTC).isoformat(),
        expires_at.astimezone(UTC).isoformat(),
    )
    return hmac.new(tag_key, message, hashlib.sha256).digest()


def consent_head(tag_key: bytes, member_id: str, count: int, last_tag: bytes) -> bytes:
    """The tag on a member row that closes its consent chain: its length and last tag."""
    message = associated_data("consent_head", member_id, str(count), last_tag.hex())
    return hmac.new(tag_key, message, hashlib.sha256).digest()


def tags_equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison of two tags."""
    return hmac.compare_digest(a, b)
