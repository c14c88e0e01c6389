"""The registry's failures, grouped so a servicer can map each group to one gRPC status.

Every message names what was asked for and what to do about it; none holds a password
(URLs are masked) or a receipt's bytes.
"""

from __future__ import annotations

from coordinator.errors import CoordinatorError


class RegistryError(CoordinatorError):
    """The coordinator's registry database could not do what was asked."""


class RegistryUnavailableError(RegistryError):
    """The database cannot be reached or opened (server down, wrong URL, no such folder)."""


class RegistrySchemaError(RegistryError):
    """The database's schema is one this code does not know (written by a newer loyalnet)."""


class RegistryValueError(RegistryError):
    """An argument is malformed: a naive datetime, an unknown kind, details that are not
    plain JSON, a name that is empty or too long (gRPC: INVALID_ARGUMENT)."""


class RegistryNotFoundError(RegistryError):
    """The store, command, erasure, model version or run named does not exist (NOT_FOUND)."""


class RegistryConflictError(RegistryError):
    """The request contradicts what is recorded: a different sha256 for a known version,
    nothing to roll back to, a run already finished, a revoked store (FAILED_PRECONDITION)."""


class WrongStoreError(RegistryError):
    """A store tried to acknowledge a command addressed to another store (PERMISSION_DENIED)."""
