"""Checks on what callers pass in, so nothing unexpected is written for good.

The audit log and the heartbeat table are read by every admin and kept for years; they are
for decisions and aggregate numbers, never for a face. So their values are held to plain,
small JSON: a 128- or 512-float face template does not fit in a 64-item list, and no bytes
are accepted at all.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime

from coordinator.registry.errors import RegistryValueError
from coordinator.registry.records import DetailValue, HealthValue
from coordinator.registry.schema import NAME_LENGTH

MAX_DETAIL_KEYS = 32
MAX_DETAIL_LIST = 64
"""Items in one audit list: room for a few names, too few for a face template."""
MAX_STRING = 1000
"""Characters in one audit or heartbeat string: room for a message, not for an image."""
MAX_HEALTH_STRING = 200
MAX_PAYLOAD_BYTES = 1 << 20
"""A command's JSON payload, UTF-8 bytes; a model manifest is tens of kilobytes."""


def aware(at: datetime, what: str = "at") -> datetime:
    """``at`` in UTC; refuses a naive datetime, whose zone could only be guessed."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise RegistryValueError(
            f"{what}={at.isoformat()} has no time zone; pass an aware datetime such as "
            "datetime.now(UTC)"
        )
    return at.astimezone(UTC)


def text(value: str, what: str, max_length: int = NAME_LENGTH) -> str:
    """A non-empty single-line string of at most ``max_length`` characters."""
    if not isinstance(value, str) or not value.strip():
        raise RegistryValueError(f"{what} is empty; give a non-empty name")
    if len(value) > max_length:
        raise RegistryValueError(
            f"{what} is {len(value)} characters long; at most {max_length} are allowed"
        )
    if not value.isprintable():
        raise RegistryValueError(f"{what} {value!r} holds control characters; remove them")
    return value


def _scalar_ok(value: object) -> bool:
    if value is None or isinstance(value, bool | int | str):
        return not isinstance(value, str) or len(value) <= MAX_STRING
    return isinstance(value, float) and math.isfinite(value)


def audit_details(details: Mapping[str, object]) -> dict[str, DetailValue]:
    """Validated audit details: string keys; str/int/float/bool/None values or short flat
    lists of them.

    Raises:
        RegistryValueError: anything else (bytes, nested objects, NaN, long strings or
            lists), naming the key, so a caller cannot log a biometric blob by accident.
    """
    if not isinstance(details, Mapping):
        raise RegistryValueError("audit details must be a dict of plain JSON values")
    if len(details) > MAX_DETAIL_KEYS:
        raise RegistryValueError(
            f"audit details have {len(details)} keys; at most {MAX_DETAIL_KEYS} are allowed"
        )
    clean: dict[str, DetailValue] = {}
    for key, value in details.items():
        if not isinstance(key, str) or not key or len(key) > 64:
            raise RegistryValueError(f"audit detail key {key!r} must be a string of 1-64 chars")
        if isinstance(value, list):
            if len(value) > MAX_DETAIL_LIST or not all(_scalar_ok(item) for item in value):
                raise RegistryValueError(
                    f"audit detail {key!r} must be a list of at most {MAX_DETAIL_LIST} "
                    f"str/int/float/bool/None values (strings up to {MAX_STRING} chars); "
                    "audit records never hold templates or images"
                )
            clean[key] = list(value)
        elif _scalar_ok(value):
            clean[key] = value  # type: ignore[assignment]  # _scalar_ok narrowed it
        else:
            raise RegistryValueError(
                f"audit detail {key!r} is a {type(value).__name__}; only str (up to "
                f"{MAX_STRING} chars), int, finite float, bool, None or a short list of them "
                "are allowed, so audit records never hold templates or images"
            )
    return clean


def health(store: str, values: Mapping[str, object]) -> dict[str, HealthValue]:
    """A heartbeat's numbers, flat: str (up to 200 chars), int, finite float or bool."""
    if not isinstance(values, Mapping):
        raise RegistryValueError(f"store {store!r}: heartbeat health must be a dict")
    clean: dict[str, HealthValue] = {}
    for key, value in values.items():
        ok = isinstance(key, str) and 0 < len(key) <= 64
        if isinstance(value, str):
            ok = ok and len(value) <= MAX_HEALTH_STRING
        elif isinstance(value, float):
            ok = ok and math.isfinite(value)
        elif not isinstance(value, bool | int):
            ok = False
        if not ok:
            raise RegistryValueError(
                f"store {store!r}: heartbeat value {key!r}={value!r:.60} is not an aggregate "
                f"number; health holds only str (up to {MAX_HEALTH_STRING} chars), int, "
                "finite float or bool values"
            )
        clean[key] = value  # type: ignore[assignment]  # checked just above
    return clean


def metrics(values: Mapping[str, object]) -> dict[str, float]:
    """A round's aggregate metrics: names to finite numbers (stored as float)."""
    clean: dict[str, float] = {}
    for key, value in values.items():
        if (
            not isinstance(key, str)
            or not key
            or isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise RegistryValueError(
                f"round metric {key!r}={value!r:.60} must be a finite number under a non-empty name"
            )
        clean[key] = float(value)
    return clean


def payload(values: Mapping[str, object]) -> dict[str, object]:
    """A command's payload: a JSON object of at most 1 MiB, without NaN or bytes."""
    try:
        encoded = json.dumps(dict(values), allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as error:
        raise RegistryValueError(
            f"command payload is not plain JSON ({error}); pass str, numbers, bools, lists "
            "and dicts only"
        ) from error
    if len(encoded.encode()) > MAX_PAYLOAD_BYTES:
        raise RegistryValueError(
            f"command payload is {len(encoded.encode())} bytes of JSON; at most "
            f"{MAX_PAYLOAD_BYTES} are allowed"
        )
    decoded: dict[str, object] = json.loads(encoded)
    return decoded


def version(value: int, what: str = "version", *, allow_zero: bool = True) -> int:
    """A model version: an int >= 0 (>= 1 when 0, the pretrained model, makes no sense)."""
    lowest = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        raise RegistryValueError(f"{what}={value!r} must be an integer >= {lowest}")
    return value
