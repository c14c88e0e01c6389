"""Checks on what callers hand the gallery: ids, labels, embeddings, crops and instants."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from loyalnet.member_ids import member_id_problem
from store_node.gallery.errors import InvalidInputError

EMBEDDING_DIM = 128
CROP_SHAPE = (112, 112, 3)
LABEL_MAX_CHARS = 128
TEXT_MAX_CHARS = 200


def check_member_id(member_id: str) -> str:
    """``member_id`` if it is a usable member id: 1-128 printable characters, no outer blanks."""
    problem = member_id_problem(member_id)
    if problem is not None:
        raise InvalidInputError(problem)
    return member_id


def check_label(value: str, what: str, max_chars: int = LABEL_MAX_CHARS) -> str:
    """``value`` if it is a non-empty printable label of at most ``max_chars`` characters."""
    if not isinstance(value, str) or not value.strip() or not value.isprintable():
        raise InvalidInputError(f"{what} must be a non-empty printable string, not {value!r}.")
    if len(value) > max_chars:
        raise InvalidInputError(f"{what} is {len(value)} characters, more than {max_chars}.")
    return value


def check_optional_text(value: str | None, what: str) -> str | None:
    """``value`` (None allowed) if it is printable text of at most 200 characters."""
    if value is None:
        return None
    return check_label(value, what, TEXT_MAX_CHARS)


def as_embeddings(array: Any, *, allow_empty: bool = False) -> NDArray[np.float32]:
    """``array`` as a C-contiguous (K, 128) float32 array of unit rows.

    Rows are re-normalised to L2 norm 1, so cosine similarity is a plain dot product.

    Raises:
        InvalidInputError: for a wrong shape, non-finite values, a zero row, or K = 0 unless
            ``allow_empty``.
    """
    try:
        values = np.asarray(array, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise InvalidInputError(f"embeddings must be a numeric array ({error}).") from error
    if values.ndim != 2 or values.shape[1] != EMBEDDING_DIM:
        raise InvalidInputError(
            f"embeddings must have shape (K, {EMBEDDING_DIM}), not {values.shape}; "
            "pass the face embedder's output."
        )
    if values.shape[0] == 0 and not allow_empty:
        raise InvalidInputError("no embeddings given; pass at least one.")
    if not np.isfinite(values).all():
        raise InvalidInputError("embeddings contain NaN or infinity; the embedder failed.")
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    if (norms == 0).any():
        raise InvalidInputError("an embedding is all zeros; the embedder failed.")
    return np.ascontiguousarray(values / norms, dtype=np.float32)


def as_crops(array: Any, count: int) -> NDArray[np.uint8]:
    """``array`` as a C-contiguous (count, 112, 112, 3) uint8 array of aligned face crops.

    Raises:
        InvalidInputError: for another dtype or shape (one crop per embedding is expected).
    """
    values = np.asarray(array)
    expected = (count, *CROP_SHAPE)
    if values.dtype != np.uint8 or values.shape != expected:
        raise InvalidInputError(
            f"crops must be a uint8 array of shape {expected} (one aligned crop per embedding), "
            f"not {values.dtype} {values.shape}."
        )
    return np.ascontiguousarray(values)


def check_threshold(threshold: float) -> float:
    """``threshold`` as a float if finite (a cosine; usually within [-1, 1])."""
    value = float(threshold)
    if not math.isfinite(value):
        raise InvalidInputError(f"the threshold must be a finite number, not {threshold}.")
    return value


def resolve_now(now: datetime | None) -> datetime:
    """``now`` in UTC, or the current instant when None; naive datetimes are refused."""
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None or now.utcoffset() is None:
        raise InvalidInputError(
            "a naive datetime is ambiguous; pass a timezone-aware one, e.g. datetime.now(UTC)."
        )
    return now.astimezone(UTC)
