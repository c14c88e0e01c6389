"""A store's trained backbone on the wire in half the bytes: its change, in float16.

A round's reply is the trained backbone; in float32 that is 4 bytes a number, about 4 MB for
MobileFaceNet. The ``float16-delta`` encoding sends instead, for each packed array (names as in
``loyalnet.packed_backbone``, with :data:`DELTA_SUFFIX` added)::

    d = float16(w_trained - w_received)

and the coordinator restores ``w = w_global + float32(d)`` before anything else looks at the
reply (screening, bounds, DP clipping and averaging see float32 weights, as before).

Why the change and not the weights in float16: float16 keeps 11 significant bits, so a weight
of 0.1 is rounded by up to 2.4e-5, about the size of a whole round's change at the default
learning rate (a store's update is 1e-4 to 1e-2 in L2 over a million numbers). Rounding the
weights would add noise as large as the signal; rounding the change keeps each number's change
exact to 1 part in 2,000. A change beyond float16's range (65,504) becomes infinite and the
coordinator refuses the reply as not finite, like any other broken update.

The coordinator asks for it with the run config key ``update-encoding``; a store sends float32
unless asked, and a store that does not know the key declines the round (the store's floor
fails closed on unknown keys).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from flwr.app import Array, ArrayRecord

from loyalnet.errors import LoyalnetError

UpdateEncoding = Literal["float32", "float16-delta"]
FLOAT32: UpdateEncoding = "float32"
FLOAT16_DELTA: UpdateEncoding = "float16-delta"
ENCODINGS: tuple[UpdateEncoding, ...] = (FLOAT32, FLOAT16_DELTA)
UPDATE_ENCODING_KEY = "update-encoding"
"""Round config key the coordinator asks for an encoding with (absent: ``float32``)."""
DELTA_SUFFIX = "+float16-delta"
"""Added to an array's name when it carries the float16 change, not the weights."""


class UpdateEncodingError(LoyalnetError):
    """An encoded update does not fit the global model it claims to change."""


def encoding_named(value: object) -> UpdateEncoding:
    """``value`` as an encoding name.

    Raises:
        UpdateEncodingError: it names none of :data:`ENCODINGS`.
    """
    for known in ENCODINGS:
        if value == known:
            return known
    raise UpdateEncodingError(
        f"update-encoding {value!r} is unknown; use one of {', '.join(map(repr, ENCODINGS))}."
    )


def encode_float16_delta(trained: ArrayRecord, received: ArrayRecord) -> ArrayRecord:
    """``trained`` as float16 changes from ``received``, array by array, in the same order.

    Raises:
        UpdateEncodingError: the two records do not hold the same names and shapes.
    """
    _check_same(trained, received, "the trained backbone")
    changes = {}
    for name in trained:
        change = trained[name].numpy().astype(np.float32) - received[name].numpy().astype(
            np.float32
        )
        with np.errstate(over="ignore"):  # beyond float16's range: inf, refused as not finite
            changes[name + DELTA_SUFFIX] = Array(change.astype(np.float16))
    return ArrayRecord(changes)


def is_float16_delta(record: ArrayRecord) -> bool:
    """Whether ``record`` carries float16 changes (:func:`encode_float16_delta`)."""
    names = list(record.keys())
    return bool(names) and all(name.endswith(DELTA_SUFFIX) for name in names)


def decode_float16_delta(sent: ArrayRecord, global_arrays: ArrayRecord) -> ArrayRecord:
    """The float32 weights ``global + change`` of an encoded reply, in the global order.

    The sender's declared dtype and shape are checked against the bytes themselves: a change
    of one number declared as a whole array would otherwise broadcast over it.

    Raises:
        UpdateEncodingError: ``sent`` is not an encoded change of ``global_arrays`` (other
            names or shapes, not float16, or bytes that are not what they declare).
    """
    for name in sent:
        if not name.endswith(DELTA_SUFFIX):
            raise UpdateEncodingError(f"array {name!r} is not a float16 change.")
        if sent[name].dtype != "float16":
            raise UpdateEncodingError(f"array {name!r} is {sent[name].dtype}, not float16.")
    plain = ArrayRecord({name.removesuffix(DELTA_SUFFIX): sent[name] for name in sent})
    _check_same(plain, global_arrays, "the reply")
    restored = {}
    for name in global_arrays:
        try:
            change = plain[name].numpy()
        except (TypeError, ValueError, OSError, EOFError) as err:
            raise UpdateEncodingError(f"array {name!r} cannot be read ({err}).") from None
        expected = tuple(global_arrays[name].shape)
        if change.dtype != np.float16 or change.shape != expected:
            raise UpdateEncodingError(
                f"array {name!r} holds {change.dtype} {change.shape}, not the float16 "
                f"{expected} it declares."
            )
        origin = global_arrays[name].numpy().astype(np.float32)
        restored[name] = Array(origin + change.astype(np.float32))
    return ArrayRecord(restored)


def _check_same(record: ArrayRecord, reference: ArrayRecord, what: str) -> None:
    if set(record.keys()) != set(reference.keys()):
        raise UpdateEncodingError(
            f"{what} has arrays {sorted(record.keys())}, the global model "
            f"{sorted(reference.keys())}."
        )
    for name in reference:
        if tuple(record[name].shape) != tuple(reference[name].shape):
            raise UpdateEncodingError(
                f"{what}'s {name!r} has shape {tuple(record[name].shape)}, the global model's "
                f"{tuple(reference[name].shape)}."
            )
