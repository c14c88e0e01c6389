"""The failures of the member gallery, each one a :class:`LoyalnetError` a person can act on."""

from __future__ import annotations

from loyalnet.errors import LoyalnetError


class GalleryError(LoyalnetError):
    """Something is wrong with a store's gallery or with what was asked of it."""


class InvalidInputError(GalleryError, ValueError):
    """An argument has the wrong shape, type or range (a caller's mistake, not the data's)."""


class KeyFileError(GalleryError):
    """The store key file is missing, exposed to other users, malformed or already present."""


class WrongKeyError(GalleryError):
    """The key file is well formed but is not the key this gallery was sealed with."""


class TamperedDataError(GalleryError):
    """A sealed value failed authentication: it was altered, moved to another row, or damaged."""


class GalleryNotFoundError(GalleryError):
    """There is no gallery database at the given path."""


class GalleryExistsError(GalleryError):
    """A gallery (or its key) already exists where a new one was to be created."""


class DamagedGalleryError(GalleryError):
    """The file is not a loyalnet gallery, or SQLite reports it as corrupt."""


class GalleryBusyError(GalleryError):
    """Another program holds the gallery locked, or changed it under our feet."""


class UnknownMemberError(GalleryError):
    """The member id is not in this gallery."""


class ConsentError(GalleryError):
    """The member's consent does not cover what was asked (missing, expired or wrong purpose)."""


class PurposeError(GalleryError, ValueError):
    """A consent purpose is not one loyalnet knows."""


class CalibrationError(GalleryError):
    """Impostor scores are missing, malformed or too few for a calibration."""


class ScrubError(GalleryError):
    """Deleted data could not yet be wiped from the database files (another program holds them)."""
