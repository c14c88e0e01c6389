"""What the gallery hands back to callers: plain frozen records, never ORM rows or biometrics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from store_node.gallery.consent import Consent, Purpose


class AuditAction(StrEnum):
    """What an audit record is about."""

    MEMBER = "member"  # a member was added or their name or tier changed
    CONSENT = "consent"  # a consent was recorded
    ENROL = "enrol"  # templates (and maybe crops) were stored
    ERASE = "erase"  # a member was erased
    CALIBRATE = "calibrate"  # the store's impostor scores or target FPIR changed
    MODEL_REFUSED = "model_refused"  # a model failed the store's checks and was not adopted
    WITHDRAW = "withdraw"  # a member withdrew consent to some purposes
    PURGE = "purge"  # biometrics no consent in force covers any more were deleted


@dataclass(frozen=True)
class EnrolmentResult:
    """What one call to ``Gallery.add_templates`` stored.

    Attributes:
        templates_added: sealed embeddings written.
        crops_stored: sealed crops written; 0 when the consent lacks model improvement.
    """

    templates_added: int
    crops_stored: int


@dataclass(frozen=True)
class MemberEnrolment:
    """What one call to ``Gallery.enrol`` wrote, all in one transaction.

    Attributes:
        consent: the consent recorded (it governs from the enrolment on).
        templates_added: sealed embeddings written.
        crops_stored: sealed crops written; 0 when the consent lacks model improvement.
        crops_removed: crops of an earlier enrolment deleted because the new consent lacks
            model improvement.
    """

    consent: Consent
    templates_added: int
    crops_stored: int
    crops_removed: int


@dataclass(frozen=True)
class Removed:
    """Biometrics deleted from one member (or, summed, from several)."""

    templates: int = 0
    crops: int = 0
    class_weights: int = 0

    @property
    def total(self) -> int:
        """Rows deleted, all kinds together."""
        return self.templates + self.crops + self.class_weights

    def __add__(self, other: Removed) -> Removed:
        return Removed(
            self.templates + other.templates,
            self.crops + other.crops,
            self.class_weights + other.class_weights,
        )


@dataclass(frozen=True)
class Withdrawal:
    """The outcome of ``Gallery.withdraw``.

    Attributes:
        receipt_id: the audit record written for it.
        withdrawn: the purposes the member withdrew.
        consent: the consent in force afterwards (narrower), or None when nothing remains.
        consent_changed: False when no consent in force covered the withdrawn purposes (then
            no consent was recorded, but their biometrics were still deleted).
        removed: biometrics deleted because no remaining purpose covers them.
    """

    receipt_id: str
    withdrawn: frozenset[Purpose]
    consent: Consent | None
    consent_changed: bool
    removed: Removed


@dataclass(frozen=True)
class PurgeReport:
    """The outcome of ``Gallery.purge_expired``: no member ids, only keyed pseudonyms.

    Attributes:
        purged_at: the instant the consents were judged at (UTC).
        member_refs: keyed pseudonyms of the members who lost biometrics, sorted.
        receipt_ids: one audit record per such member.
        removed: biometrics deleted, all members together.
        tampered: members among them whose consent records failed their integrity check.
    """

    purged_at: datetime
    member_refs: tuple[str, ...]
    receipt_ids: tuple[str, ...]
    removed: Removed
    tampered: int


@dataclass(frozen=True)
class IntegrityProblem:
    """A member record that failed its integrity check (found by ``Gallery.check``)."""

    member_id: str
    problem: str


@dataclass(frozen=True)
class Match:
    """The gallery's answer for one probe embedding.

    Attributes:
        member_id: the recognised member, or None for "unknown" (similarity at or below the
            threshold, or nobody to compare with).
        candidate_id: the best-scoring member even when unknown; "" when nobody was compared.
        similarity: cosine similarity in [-1, 1] with the candidate's closest template of the
            same model version; -1.0 when nobody was compared.
        threshold: the decision threshold used (cosine); a match needs similarity > threshold.
    """

    member_id: str | None
    candidate_id: str
    similarity: float
    threshold: float


@dataclass(frozen=True)
class MemberSummary:
    """A member as staff may see it: who, what consent, how many templates; never a face.

    Attributes:
        purposes: purposes of the consent in force now; empty when none is.
        consent_expires_at: end of the consent in force now (UTC), or None.
        templates: sealed embeddings stored, all model versions together.
        crops: sealed enrolment crops stored.
        model_versions: the model versions of the templates, sorted.
        problems: integrity failures of this member's records (a consent record that was
            edited, copied or deleted; a name that does not open); empty when sound. A member
            with a consent problem counts as having no consent.
    """

    member_id: str
    display_name: str | None
    tier: str | None
    purposes: frozenset[Purpose]
    consent_expires_at: datetime | None
    templates: int
    crops: int
    model_versions: tuple[str, ...]
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class ErasureReceipt:
    """Proof that a member was erased; holds no biometrics and not the member id in clear.

    Attributes:
        receipt_id: the id of the audit record written for the erasure.
        member_ref: keyed pseudonym of the member id (see ``Gallery.was_erased``).
        erased_at: when (UTC).
    """

    receipt_id: str
    member_ref: str
    erased_at: datetime
    templates_removed: int
    crops_removed: int
    consents_removed: int


@dataclass(frozen=True)
class AuditEntry:
    """One record of the audit trail.

    Attributes:
        action: one of :class:`AuditAction`.
        member_ref: keyed pseudonym of the member concerned, or None for store-wide actions.
        details: counts and labels (never biometrics, never a member id).
    """

    receipt_id: str
    action: AuditAction
    at: datetime
    member_ref: str | None
    details: Mapping[str, object]
