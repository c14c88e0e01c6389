"""The member gallery of a store node: consenting members, sealed face templates, 1:N search.

Biometrics, names and tiers are sealed at rest with the store's key file (AES-256-GCM); consent
rows carry keyed tags, so an edited one counts as no consent; consent is recorded before (or
with) any template; withdrawing or outliving a consent deletes what it covered; erasing a member
wipes every trace from the database files and leaves an audit record that holds no biometrics
and no member id in clear.
"""

from store_node.gallery.calibration import (
    ImpostorScores,
    Threshold,
    far_per_comparison,
    impostor_scores_from_embeddings,
    threshold_for_fpir,
)
from store_node.gallery.consent import Consent, Purpose, parse_purposes
from store_node.gallery.errors import (
    CalibrationError,
    ConsentError,
    DamagedGalleryError,
    GalleryBusyError,
    GalleryError,
    GalleryExistsError,
    GalleryNotFoundError,
    InvalidInputError,
    KeyFileError,
    PurposeError,
    ScrubError,
    TamperedDataError,
    UnknownMemberError,
    WrongKeyError,
)
from store_node.gallery.gallery import Gallery
from store_node.gallery.inputs import CROP_SHAPE, EMBEDDING_DIM
from store_node.gallery.keyfile import StoreKey
from store_node.gallery.records import (
    AuditAction,
    AuditEntry,
    EnrolmentResult,
    ErasureReceipt,
    IntegrityProblem,
    Match,
    MemberEnrolment,
    MemberSummary,
    PurgeReport,
    Removed,
    Withdrawal,
)

__all__ = [
    "CROP_SHAPE",
    "EMBEDDING_DIM",
    "AuditAction",
    "AuditEntry",
    "CalibrationError",
    "Consent",
    "ConsentError",
    "DamagedGalleryError",
    "EnrolmentResult",
    "ErasureReceipt",
    "Gallery",
    "GalleryBusyError",
    "GalleryError",
    "GalleryExistsError",
    "GalleryNotFoundError",
    "ImpostorScores",
    "IntegrityProblem",
    "InvalidInputError",
    "KeyFileError",
    "Match",
    "MemberEnrolment",
    "MemberSummary",
    "PurgeReport",
    "Purpose",
    "PurposeError",
    "Removed",
    "ScrubError",
    "StoreKey",
    "TamperedDataError",
    "Threshold",
    "UnknownMemberError",
    "Withdrawal",
    "WrongKeyError",
    "far_per_comparison",
    "impostor_scores_from_embeddings",
    "parse_purposes",
    "threshold_for_fpir",
]
