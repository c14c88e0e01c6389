"""The failure of local training: a :class:`LoyalnetError` a person or a coordinator can act on."""

from __future__ import annotations

from loyalnet.errors import LoyalnetError


class TrainingError(LoyalnetError):
    """A training round or a model hand-over that cannot go ahead as asked."""
