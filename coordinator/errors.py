"""The coordinator's failures, each a :class:`LoyalnetError` a person can act on."""

from __future__ import annotations

from loyalnet.errors import LoyalnetError


class CoordinatorError(LoyalnetError):
    """Federated training could not go ahead or finish as asked."""


class RunConfigError(CoordinatorError):
    """A run config value is missing, of the wrong type or out of range."""


class TooFewStoresError(CoordinatorError):
    """Fewer stores than the run needs were connected when a round was due."""


class NoStoreTrainedError(CoordinatorError):
    """Every round ended without a single store's update, so there is no new model."""


class ModelVersionError(CoordinatorError):
    """A model version could not be written, or a stored one does not match its manifest."""


class FlowerProcessError(CoordinatorError):
    """A local Flower process did not start, did not become ready, or a command failed."""
