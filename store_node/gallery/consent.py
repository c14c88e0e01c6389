"""What a member agreed to: the purposes, under which policy, and until when.

A member may consent several times (renewal, narrowing or widening the purposes). The consent
that governs at a moment is the one granted most recently up to that moment; an older, broader
consent never outlives a newer, narrower one. A withdrawal is recorded as a newer consent: with
the remaining purposes and the old expiry, or, when nothing remains, with no purposes and an
expiry equal to its grant, so that from then on no consent is in force.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from store_node.gallery.errors import PurposeError


class Purpose(StrEnum):
    """Why the store may process a member's face."""

    RECOGNITION = "recognition"  # templates, matched when the member walks in
    MODEL_IMPROVEMENT = "model_improvement"  # aligned enrolment crops, kept to improve the model


def parse_purposes(text: str) -> frozenset[Purpose]:
    """The purposes of a comma list such as ``"recognition,model_improvement"``.

    Blanks around names are ignored and case does not matter.

    Raises:
        PurposeError: when the list is empty or names a purpose loyalnet does not know.
    """
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    known = [purpose.value for purpose in Purpose]
    valid = ", ".join(known)
    if not names:
        raise PurposeError(f"no consent purpose given; give a comma list of: {valid}.")
    unknown = sorted({name for name in names if name not in known})
    if unknown:
        raise PurposeError(
            f"unknown consent purpose {', '.join(repr(n) for n in unknown)}; "
            f"valid purposes are: {valid}."
        )
    return frozenset(Purpose(name) for name in names)


def format_purposes(purposes: Iterable[Purpose]) -> str:
    """The canonical comma list of ``purposes``: sorted, no blanks (the stored form)."""
    return ",".join(sorted(purpose.value for purpose in purposes))


@dataclass(frozen=True)
class Consent:
    """One consent a member gave.

    Attributes:
        purposes: what the member agreed to; empty only for the record of a withdrawal of
            every purpose, which expires the instant it is granted.
        policy_version: the privacy policy the member was shown, e.g. "2026-11".
        granted_at: when consent was given (timezone-aware, UTC).
        expires_at: end of retention (timezone-aware, UTC, exclusive).
    """

    purposes: frozenset[Purpose]
    policy_version: str
    granted_at: datetime
    expires_at: datetime

    def is_valid(self, now: datetime, purpose: Purpose) -> bool:
        """True when ``now`` lies in [granted_at, expires_at) and ``purpose`` was agreed to."""
        return self.granted_at <= now < self.expires_at and purpose in self.purposes


def governing_consent(history: Iterable[Consent], now: datetime) -> Consent | None:
    """The consent in force at ``now``: the latest granted up to ``now``, unless it has expired.

    ``history`` must be in recording order; of two consents granted at the same instant the one
    recorded last wins.
    """
    latest: Consent | None = None
    for consent in history:
        if consent.granted_at <= now and (
            latest is None or consent.granted_at >= latest.granted_at
        ):
            latest = consent
    if latest is None or now >= latest.expires_at:
        return None
    return latest
