"""A store's member gallery: members, their consent, sealed templates, 1:N search, erasure.

One SQLite file per store, sealed with the store's key file (see :mod:`.keyfile`). The gallery
is small (under 10,000 templates), so every search opens the templates it needs afresh and
keeps no decrypted biometrics between calls.

Consent is honest in both directions: only consent rows whose keyed tags check out count (see
:mod:`.sealing`), and biometrics live only as long as a consent in force covers them. Narrowing
or withdrawing a consent deletes what it no longer covers in the same transaction;
:meth:`Gallery.purge_expired` does the same for consents that ran out. Every deletion of
personal data is followed by a scrub (VACUUM, write-ahead log emptied); when another program
blocks it, the deletion stays committed and the error says which files still hold old copies.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from store_node.gallery import database, sealing
from store_node.gallery.calibration import ImpostorScores, check_fpir
from store_node.gallery.consent import (
    Consent,
    Purpose,
    format_purposes,
    governing_consent,
    parse_purposes,
)
from store_node.gallery.errors import (
    CalibrationError,
    ConsentError,
    DamagedGalleryError,
    GalleryBusyError,
    GalleryError,
    GalleryExistsError,
    GalleryNotFoundError,
    InvalidInputError,
    ScrubError,
    TamperedDataError,
    UnknownMemberError,
    WrongKeyError,
)
from store_node.gallery.inputs import (
    EMBEDDING_DIM,
    as_crops,
    as_embeddings,
    check_label,
    check_member_id,
    check_optional_text,
    check_threshold,
    resolve_now,
)
from store_node.gallery.keyfile import StoreKey
from store_node.gallery.models import (
    META_CALIBRATION,
    META_KEY_CHECK,
    META_SCHEMA_VERSION,
    REQUIRED_TABLES,
    SCHEMA_VERSION,
    AuditRecordRow,
    Base,
    ClassWeightRow,
    ConsentRow,
    EnrolmentCropRow,
    MemberRow,
    StoreMetaRow,
    TemplateRow,
)
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
from store_node.gallery.search import TemplateIndex

MAX_RETENTION_DAYS = 3650
_DB_COMPANIONS = ("-wal", "-shm", "-journal")
_CONSENT_PROBLEM = (
    "consent records failed their integrity check (edited, copied from another member, or "
    "deleted): no consent counts until a new one is recorded"
)
_PROFILE_PROBLEM = "the sealed name and tier do not open (altered or moved): set them again"


class Gallery:
    """The members of one store and their sealed face templates.

    Use as a context manager (or call :meth:`close`); build with :meth:`create` or :meth:`open`.
    Instants are timezone-aware; ``now=None`` means the current time.
    """

    def __init__(self, db_path: Path, key: StoreKey, engine: Engine) -> None:
        """Use :meth:`create` or :meth:`open`; this only wires parts already checked."""
        self._db_path = db_path
        self._key = key
        self._member_ref_key = key.derive(sealing.MEMBER_REF_PURPOSE)
        self._consent_key = key.derive(sealing.CONSENT_TAG_PURPOSE)
        self._engine: Engine | None = engine
        self._reader = sessionmaker(engine, expire_on_commit=False)
        self._writer = sessionmaker(database.writer(engine), expire_on_commit=False)

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def create(cls, db_path: Path, key_path: Path) -> Gallery:
        """Create a new, empty gallery at ``db_path`` and its new key file at ``key_path``.

        Both files get mode 0600. Nothing is left behind when creation fails.

        Raises:
            GalleryExistsError: when either file exists already.
            KeyFileError, GalleryError: when the files cannot be written.
        """
        db_path, key_path = Path(db_path), Path(key_path)
        for existing in (db_path, key_path):
            if existing.exists():
                raise GalleryExistsError(
                    f"{existing} already exists; open that gallery instead, or choose new paths "
                    "to create one."
                )
        key = StoreKey.create(key_path)
        engine: Engine | None = None
        made_db = False
        try:
            try:
                # O_EXCL: two concurrent creations cannot both believe they made the file.
                os.close(os.open(db_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except OSError as error:
                raise GalleryError(
                    f"cannot create the gallery {db_path} ({error.strerror}); check that its "
                    "folder exists and is writable and that no gallery is there yet."
                ) from error
            made_db = True
            engine = database.open_engine(db_path)
            with database.translated_errors(db_path):
                database.enable_wal(engine)
                Base.metadata.create_all(engine)
                with sessionmaker(database.writer(engine)).begin() as session:
                    session.add_all(
                        [
                            StoreMetaRow(
                                key=META_SCHEMA_VERSION, value=str(SCHEMA_VERSION).encode()
                            ),
                            StoreMetaRow(
                                key=META_KEY_CHECK,
                                value=key.seal(sealing.KEY_CHECK_PLAINTEXT, sealing.KEY_CHECK_AAD),
                            ),
                        ]
                    )
        except BaseException:
            if engine is not None:
                engine.dispose()
            made = [db_path, *_companions(db_path)] if made_db else []
            for leftover in (*made, key_path):
                leftover.unlink(missing_ok=True)
            raise
        return cls(db_path, key, engine)

    @classmethod
    def open(cls, db_path: Path, key_path: Path) -> Gallery:
        """Open the gallery at ``db_path`` with the key file at ``key_path``.

        Opening only reads: a failed open (wrong key, damaged file) changes no byte of the
        database.

        Raises:
            GalleryNotFoundError: when there is no file at ``db_path``.
            KeyFileError: when the key file is missing, exposed or malformed.
            DamagedGalleryError: when the file is not a loyalnet gallery, is corrupt, or has
                another schema version (an older one says to run `loyalnet store migrate`,
                see :mod:`.migration`).
            WrongKeyError: when the key is not the one this gallery was created with.
        """
        db_path, key_path = Path(db_path), Path(key_path)
        if not db_path.exists():
            raise GalleryNotFoundError(
                f"no gallery at {db_path}; run `loyalnet store init` to create one."
            )
        if not db_path.is_file():
            raise DamagedGalleryError(f"{db_path} is not a file; point at the store's gallery.db.")
        key = StoreKey.load(key_path)
        engine = database.open_engine(db_path)
        try:
            with database.translated_errors(db_path):
                _check_structure(engine, db_path)
                with sessionmaker(engine).begin() as session:
                    meta = {row.key: row.value for row in session.scalars(select(StoreMetaRow))}
            _check_meta(meta, key, db_path, key_path)
        except BaseException:
            engine.dispose()
            raise
        return cls(db_path, key, engine)

    def close(self) -> None:
        """Close every connection; SQLite then folds the write-ahead log back into the file."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Gallery({str(self._db_path)!r})"

    @property
    def db_path(self) -> Path:
        """The gallery's SQLite file."""
        return self._db_path

    # -- members and consent ---------------------------------------------------------------

    def add_member(
        self, member_id: str, display_name: str | None = None, tier: str | None = None
    ) -> None:
        """Add a member, or set the display name and tier of an existing one (None clears).

        The name and tier are sealed with the store key, bound to the member id.
        """
        member_id = check_member_id(member_id)
        profile = sealing.Profile(
            check_optional_text(display_name, "the display name"),
            check_optional_text(tier, "the tier"),
        )
        now = resolve_now(None)
        with self._session(write=True) as session:
            self._put_member(session, member_id, profile, now)

    def record_consent(
        self,
        member_id: str,
        purposes: str | Iterable[Purpose],
        policy_version: str,
        retention_days: int = 365,
        now: datetime | None = None,
    ) -> Consent:
        """Record that the member consents to ``purposes`` from ``now`` for ``retention_days``.

        The new consent governs from ``now`` on. Biometrics it no longer covers are deleted (and
        wiped from the files) at once: templates when it lacks recognition, enrolment crops and
        class rows when it lacks recognition or model improvement.

        Args:
            purposes: Purpose values, or a comma list such as "recognition,model_improvement".
            policy_version: the privacy policy the member agreed to, e.g. "2026-11".
            retention_days: days the consent (and so the templates' use) lasts, 1 to 3650.

        Raises:
            UnknownMemberError: when the member was not added first.
            PurposeError, InvalidInputError: for no or unknown purposes, or a bad retention.
            ScrubError: the consent is recorded and the biometrics deleted, but another program
                keeps old pages alive; :meth:`scrub` finishes the job.
        """
        member_id = check_member_id(member_id)
        consent = _new_consent(purposes, policy_version, retention_days, resolve_now(now))
        with self._write(f"member {member_id}'s consent was not recorded") as session:
            member = self._require_member(session, member_id)
            tampered = self._append_consent(session, member, consent)
            removed, needles = self._prune(session, member_id, consent.purposes)
            details = _consent_details(consent, retention_days, removed, tampered)
            self._audit(session, AuditAction.CONSENT, member_id, details, consent.granted_at)
        if removed.total:
            self._scrub(f"member {member_id}'s consent was narrowed", removed, needles)
        return consent

    def consent_of(self, member_id: str, now: datetime | None = None) -> Consent | None:
        """The consent in force at ``now`` (the latest granted, if not expired), or None.

        A member whose consent records fail their integrity check has no consent in force.

        Raises:
            UnknownMemberError: when the member is not in the gallery.
        """
        member_id = check_member_id(member_id)
        now = resolve_now(now)
        with self._session(write=False) as session:
            self._require_member(session, member_id)
            histories, _broken = self._histories(session, member_id)
        return governing_consent(histories.get(member_id, []), now)

    def withdraw(
        self,
        member_id: str,
        purposes: Purpose | str | Iterable[Purpose],
        now: datetime | None = None,
    ) -> Withdrawal:
        """The member withdraws consent to ``purposes``: record it and delete what it covered.

        A narrower consent (the remaining purposes, same policy and expiry) is recorded, or,
        when nothing remains, a withdrawal after which no consent is in force. Withdrawing
        recognition deletes the member's templates, enrolment crops and class rows; withdrawing
        model improvement deletes the crops and class rows. Both happen in the transaction that
        records the withdrawal, and the files are then scrubbed. The member record stays (use
        :meth:`erase` to forget the member altogether).

        Biometrics the withdrawn purposes covered are deleted even when no consent covering
        them was in force (an expired one, say), so a withdrawal always leaves none behind.

        Raises:
            UnknownMemberError: when the member is not in the gallery.
            PurposeError: for an unknown purpose.
            GalleryBusyError: another program holds the write lock; nothing was changed.
            ScrubError: the withdrawal is committed but another program keeps old pages alive;
                :meth:`scrub` finishes the job.
        """
        member_id = check_member_id(member_id)
        if isinstance(purposes, Purpose):
            chosen = frozenset({purposes})
        elif isinstance(purposes, str):
            chosen = parse_purposes(purposes)
        else:
            chosen = _purposes(purposes)
        now = resolve_now(now)
        with self._write(f"member {member_id}'s withdrawal was not recorded") as session:
            member = self._require_member(session, member_id)
            histories, _broken = self._histories(session, member_id)
            current = governing_consent(histories.get(member_id, []), now)
            remaining = current.purposes - chosen if current else frozenset()
            after = current
            changed = current is not None and remaining != current.purposes
            if current is not None and changed:
                expires = current.expires_at if remaining else now
                narrower = Consent(remaining, current.policy_version, now, expires)
                self._append_consent(session, member, narrower)
                after = narrower if remaining else None
            removed, needles = self._prune(session, member_id, remaining)
            details = {
                "purposes_withdrawn": sorted(p.value for p in chosen),
                "purposes_remaining": sorted(p.value for p in remaining),
                "consent_changed": int(changed),
                **_removed_details(removed),
            }
            receipt_id = self._audit(session, AuditAction.WITHDRAW, member_id, details, now)
        if removed.total:
            self._scrub(
                f"member {member_id} withdrew {format_purposes(chosen)} (receipt {receipt_id})",
                removed,
                needles,
            )
        return Withdrawal(receipt_id, chosen, after, changed, removed)

    def purge_expired(self, now: datetime | None = None) -> PurgeReport:
        """Delete every biometric that the consent in force at ``now`` no longer covers.

        For each member with templates, crops or class rows: with no consent in force (it
        expired, was withdrawn, or its records fail their integrity check) all of them go;
        with one that lacks model improvement, the crops and class rows go. The member record
        and consent history stay, so staff see who must re-enrol. Each purged member gets an
        audit record (keyed pseudonym and counts, no biometrics), all in one transaction; the
        files are then scrubbed.

        A long-running store process should call this at least daily (a consent's expiry has
        day resolution), e.g. ``gallery.purge_expired()`` from a timer; ``loyalnet store purge``
        does the same once. Matching never uses an expired member's templates in between.

        Raises:
            GalleryBusyError: another program holds the write lock; nothing was changed.
            ScrubError: the deletion is committed but another program keeps old pages alive;
                :meth:`scrub` finishes the job.
        """
        now = resolve_now(now)
        refs: list[str] = []
        receipts: list[str] = []
        total = Removed()
        needles: list[bytes] = []
        tampered = 0
        with self._write("nothing was purged") as session:
            histories, broken = self._histories(session, None)
            holders: set[str] = set()
            for table in (TemplateRow, EnrolmentCropRow, ClassWeightRow):
                holders.update(session.scalars(select(table.member_id).distinct()))
            for member_id in sorted(holders):
                consent = governing_consent(histories.get(member_id, []), now)
                allowed = consent.purposes if consent else frozenset()
                removed, found = self._prune(session, member_id, allowed)
                if not removed.total:
                    continue
                reason = (
                    "consent failed its integrity check"
                    if member_id in broken
                    else "no consent in force"
                    if consent is None
                    else "consent lacks " + format_purposes(frozenset(Purpose) - allowed)
                )
                details = {"reason": reason, **_removed_details(removed)}
                receipts.append(self._audit(session, AuditAction.PURGE, member_id, details, now))
                refs.append(self._member_ref(member_id))
                total += removed
                needles += found
                tampered += member_id in broken
        report = PurgeReport(now, tuple(sorted(refs)), tuple(receipts), total, tampered)
        if total.total:
            what = f"biometrics of {len(refs)} member(s) whose consent ended were purged"
            self._scrub(what, total, needles)
        return report

    def enrol(
        self,
        member_id: str,
        display_name: str | None,
        tier: str | None,
        purposes: str | Iterable[Purpose],
        policy_version: str,
        retention_days: int,
        embeddings: NDArray[np.floating[Any]],
        model_version: str,
        crops: NDArray[np.uint8] | None = None,
        now: datetime | None = None,
    ) -> MemberEnrolment:
        """Add (or update) a member, record their consent and store their templates, at once.

        Everything is checked before anything is written, and the writes share one
        transaction: a failure of any part leaves no member row, no consent and no template
        behind. Crops are stored only when the consent includes model improvement; crops of an
        earlier enrolment that the new consent no longer covers are deleted.

        Raises:
            ConsentError: the purposes lack recognition; nothing is written.
            PurposeError, InvalidInputError: for a bad argument; nothing is written.
            GalleryBusyError: another program holds the write lock; nothing is written.
        """
        member_id = check_member_id(member_id)
        profile = sealing.Profile(
            check_optional_text(display_name, "the display name"),
            check_optional_text(tier, "the tier"),
        )
        now = resolve_now(now)
        consent = _new_consent(purposes, policy_version, retention_days, now)
        if Purpose.RECOGNITION not in consent.purposes:
            raise ConsentError(
                f"member {member_id} has not consented to 'recognition', which enrolment needs; "
                "record consent with purpose 'recognition'. Nothing was written."
            )
        model_version = check_label(model_version, "the model version")
        vectors = as_embeddings(embeddings)
        images = None if crops is None else as_crops(crops, vectors.shape[0])
        with self._write(f"member {member_id} was not enrolled") as session:
            member = self._put_member(session, member_id, profile, now)
            tampered = self._append_consent(session, member, consent)
            removed, needles = self._prune(session, member_id, consent.purposes)
            details = _consent_details(consent, retention_days, removed, tampered)
            self._audit(session, AuditAction.CONSENT, member_id, details, now)
            stored = self._store_templates(
                session, member_id, vectors, model_version, images, consent, now
            )
        if removed.total:
            self._scrub(f"member {member_id}'s consent was narrowed", removed, needles)
        return MemberEnrolment(consent, stored.templates_added, stored.crops_stored, removed.crops)

    # -- templates ---------------------------------------------------------------------------

    def add_templates(
        self,
        member_id: str,
        embeddings: NDArray[np.floating[Any]],
        model_version: str,
        crops: NDArray[np.uint8] | None = None,
        now: datetime | None = None,
    ) -> EnrolmentResult:
        """Seal and store the member's face templates, and their crops if consent allows.

        Args:
            embeddings: (K, 128) L2-normalised float32 embeddings of ``model_version``.
            model_version: the embedder, e.g. "mobilefacenet-ms1m-90a00ba1".
            crops: (K, 112, 112, 3) uint8 aligned crops, one per embedding, or None. Stored
                only when the consent in force includes model improvement; otherwise dropped
                (``crops_stored`` is then 0).

        Raises:
            ConsentError: when no consent for recognition is in force; nothing is stored.
            UnknownMemberError: when the member was not added first.
        """
        member_id = check_member_id(member_id)
        model_version = check_label(model_version, "the model version")
        vectors = as_embeddings(embeddings)
        images = None if crops is None else as_crops(crops, vectors.shape[0])
        now = resolve_now(now)
        with self._session(write=True) as session:
            self._require_member(session, member_id)
            histories, _broken = self._histories(session, member_id)
            consent = governing_consent(histories.get(member_id, []), now)
            if consent is None or not consent.is_valid(now, Purpose.RECOGNITION):
                raise ConsentError(
                    f"member {member_id} has no consent for recognition in force; record their "
                    "consent with purpose 'recognition' before enrolling templates."
                )
            return self._store_templates(
                session, member_id, vectors, model_version, images, consent, now
            )

    def identify(
        self,
        embeddings: NDArray[np.floating[Any]],
        model_version: str,
        threshold: float,
        *,
        now: datetime | None = None,
    ) -> list[Match]:
        """The best member for each probe embedding, or "unknown".

        A member's score is the highest cosine similarity between the probe and that member's
        templates of ``model_version``; the best member matches when its score is strictly
        above ``threshold``. Members whose consent in force lacks recognition (or has expired)
        are not searched.

        Args:
            embeddings: (Q, 128) probe embeddings of ``model_version``; Q may be 0.
            threshold: cosine similarity, usually from ``threshold_for_fpir``.

        Raises:
            TamperedDataError: when a stored template does not open for its row (moved to
                another member or model version, or altered).
        """
        model_version = check_label(model_version, "the model version")
        probes = as_embeddings(embeddings, allow_empty=True)
        threshold = check_threshold(threshold)
        now = resolve_now(now)
        owners, templates = self._open_templates(model_version, now)
        return TemplateIndex(owners, templates).search(probes, threshold)

    def searchable_templates(
        self, model_version: str, now: datetime | None = None
    ) -> tuple[list[str], NDArray[np.float32]]:
        """The templates :meth:`identify` searches at ``now``: owners (sorted) and (N, 128).

        For the store's own calibration (``store_node.gallery.open_set``); they stay in memory.
        """
        model_version = check_label(model_version, "the model version")
        return self._open_templates(model_version, resolve_now(now))

    def recognisable_members(self, now: datetime | None = None) -> set[str]:
        """The members :meth:`identify` may name at ``now`` (consent to recognition in force),
        without opening any template: cheap enough to ask after every change."""
        with self._session(write=False) as session:
            return self._recognisable(session, resolve_now(now))

    def template_count(self, model_version: str, now: datetime | None = None) -> int:
        """How many templates one probe of ``model_version`` is compared with at ``now``.

        Counts the templates :meth:`identify` searches (members with consent to recognition in
        force): the number of comparisons for ``threshold_for_fpir``.
        """
        model_version = check_label(model_version, "the model version")
        now = resolve_now(now)
        with self._session(write=False) as session:
            searchable = self._recognisable(session, now)
            rows = session.execute(
                select(TemplateRow.member_id, func.count())
                .where(TemplateRow.model_version == model_version)
                .group_by(TemplateRow.member_id)
            )
            return sum(int(count) for member, count in rows if member in searchable)

    def members(self, now: datetime | None = None) -> list[MemberSummary]:
        """Every member, sorted by id, with consent in force at ``now`` and counts; no faces.

        Names and tiers are opened here; a record that fails its integrity check is listed
        with its problem (see :meth:`check`) instead of failing the whole listing.
        """
        now = resolve_now(now)
        with self._session(write=False) as session:
            histories, broken = self._histories(session, None)
            templates: dict[str, int] = defaultdict(int)
            versions: dict[str, set[str]] = defaultdict(set)
            for member, version, count in session.execute(
                select(TemplateRow.member_id, TemplateRow.model_version, func.count()).group_by(
                    TemplateRow.member_id, TemplateRow.model_version
                )
            ):
                templates[member] += int(count)
                versions[member].add(version)
            crops = {
                member: int(count)
                for member, count in session.execute(
                    select(EnrolmentCropRow.member_id, func.count()).group_by(
                        EnrolmentCropRow.member_id
                    )
                )
            }
            rows = session.execute(
                select(MemberRow.member_id, MemberRow.sealed_profile).order_by(MemberRow.member_id)
            ).all()
        summaries = []
        for member_id, sealed_profile in rows:
            problems: list[str] = []
            if member_id in broken:
                problems.append(_CONSENT_PROBLEM)
            try:
                profile = sealing.open_profile(self._key, member_id, sealed_profile)
            except TamperedDataError:
                profile = sealing.Profile(None, None)
                problems.append(_PROFILE_PROBLEM)
            consent = governing_consent(histories.get(member_id, []), now)
            summaries.append(
                MemberSummary(
                    member_id=member_id,
                    display_name=profile.display_name,
                    tier=profile.tier,
                    purposes=consent.purposes if consent else frozenset(),
                    consent_expires_at=consent.expires_at if consent else None,
                    templates=templates.get(member_id, 0),
                    crops=crops.get(member_id, 0),
                    model_versions=tuple(sorted(versions.get(member_id, set()))),
                    problems=tuple(problems),
                )
            )
        return summaries

    def check(self) -> list[IntegrityProblem]:
        """Members whose consent records or sealed name fail their integrity check.

        A consent row edited (a date, a purpose), copied from another member, inserted or
        deleted breaks the member's consent chain; such a member counts as having no consent
        (not matched, not trained on, purged by :meth:`purge_expired`) until a new consent is
        recorded, which starts a fresh chain. Read-only.
        """
        return [
            IntegrityProblem(summary.member_id, problem)
            for summary in self.members()
            for problem in summary.problems
        ]

    # -- erasure and audit -----------------------------------------------------------------

    def erase(self, member_id: str, now: datetime | None = None) -> ErasureReceipt:
        """Forget a member: their templates, crops, consents and record, and wipe the files.

        The deletion and its audit record commit together; then the database is rebuilt and
        its write-ahead log emptied, so no file in the gallery's folder keeps the erased values.

        Raises:
            UnknownMemberError: when the member is not in the gallery.
            GalleryBusyError: another program holds the write lock; nothing was erased.
            ScrubError: when the member was erased but another program kept the old pages
                alive; the message names the receipt and the files that still hold copies, and
                :meth:`scrub` finishes the job.
        """
        member_id = check_member_id(member_id)
        now = resolve_now(now)
        with self._write(f"member {member_id} was not erased") as session:
            self._require_member(session, member_id)
            # Children first and explicitly, so the counts are exact and nothing relies on
            # the cascade alone.
            removed, needles = self._prune(session, member_id, frozenset())
            consents = _delete_count(session, ConsentRow, member_id)
            session.execute(delete(MemberRow).where(MemberRow.member_id == member_id))
            details = {
                "templates_removed": removed.templates,
                "crops_removed": removed.crops,
                "consents_removed": consents,
            }
            receipt_id = self._audit(session, AuditAction.ERASE, member_id, details, now)
        self._scrub(
            f"member {member_id} was erased (receipt {receipt_id})",
            removed,
            [member_id.encode("utf-8"), *needles],
        )
        return ErasureReceipt(
            receipt_id=receipt_id,
            member_ref=self._member_ref(member_id),
            erased_at=now,
            templates_removed=removed.templates,
            crops_removed=removed.crops,
            consents_removed=consents,
        )

    def scrub(self) -> None:
        """Rebuild the database and empty its write-ahead log, so deleted rows exist nowhere.

        Finishes an erasure, withdrawal or purge whose own scrub was blocked (ScrubError).

        Raises:
            ScrubError: when another program still reads an old snapshot of the gallery.
        """
        self._scrub("the gallery could not be scrubbed yet", Removed(), ())

    def was_erased(self, member_id: str) -> bool:
        """True when an erasure of ``member_id`` is on record (even if re-enrolled since)."""
        member_id = check_member_id(member_id)
        with self._session(write=False) as session:
            found = session.scalar(
                select(AuditRecordRow.id)
                .where(AuditRecordRow.action == AuditAction.ERASE.value)
                .where(AuditRecordRow.member_ref == self._member_ref(member_id))
                .limit(1)
            )
        return found is not None

    def audit_log(self) -> list[AuditEntry]:
        """The audit trail, oldest first; member ids appear only as keyed pseudonyms."""
        with self._session(write=False) as session:
            rows = session.scalars(select(AuditRecordRow).order_by(AuditRecordRow.id)).all()
            return [
                AuditEntry(
                    receipt_id=row.receipt_id,
                    action=AuditAction(row.action),
                    at=row.at,
                    member_ref=row.member_ref,
                    details=json.loads(row.details),
                )
                for row in rows
            ]

    def record_store_event(
        self, action: AuditAction, details: Mapping[str, object], now: datetime | None = None
    ) -> str:
        """Add an audit record about the store itself (no member), e.g. a refused model.

        ``details`` must be JSON-serialisable labels and counts, never biometrics or a
        member's data. Returns the record's receipt id.
        """
        with self._session(write=True) as session:
            return self._audit(session, action, None, details, resolve_now(now))

    def member_ref(self, member_id: str) -> str:
        """The keyed pseudonym under which the audit trail names ``member_id``."""
        return self._member_ref(check_member_id(member_id))

    # -- calibration -----------------------------------------------------------------------

    def set_calibration(self, scores: ImpostorScores, fpir: float) -> None:
        """Keep ``scores`` and the target false-positive identification rate ``fpir`` in (0, 1)."""
        fpir = check_fpir(fpir)
        payload = json.dumps({"fpir": fpir, "impostor_scores": scores.to_json()}).encode()
        now = resolve_now(None)
        with self._session(write=True) as session:
            session.merge(StoreMetaRow(key=META_CALIBRATION, value=payload))
            details = {
                "model_version": scores.model_version,
                "pairs": scores.pairs,
                "fpir": fpir,
            }
            self._audit(session, AuditAction.CALIBRATE, None, details, now)

    def calibration(self) -> tuple[ImpostorScores, float] | None:
        """The stored impostor scores and target FPIR, or None when never calibrated.

        Raises:
            CalibrationError: when the stored calibration cannot be read.
        """
        with self._session(write=False) as session:
            payload = session.scalar(
                select(StoreMetaRow.value).where(StoreMetaRow.key == META_CALIBRATION)
            )
        if payload is None:
            return None
        try:
            data = json.loads(payload)
            fpir = check_fpir(data["fpir"])
            text = data["impostor_scores"]
        except (ValueError, TypeError, KeyError) as error:
            raise CalibrationError(
                "the gallery's stored calibration cannot be read; run "
                "`loyalnet store calibrate` again."
            ) from error
        return ImpostorScores.from_json(text), fpir

    # -- internals -------------------------------------------------------------------------

    @contextmanager
    def _session(self, *, write: bool) -> Iterator[Session]:
        if self._engine is None:
            raise GalleryError(f"the gallery {self._db_path} is closed; open it again to use it.")
        factory = self._writer if write else self._reader
        with database.translated_errors(self._db_path), factory.begin() as session:
            yield session

    @contextmanager
    def _write(self, not_done: str) -> Iterator[Session]:
        """A write transaction whose lock failure says the write did not happen at all."""
        try:
            with self._session(write=True) as session:
                yield session
        except GalleryBusyError as error:
            raise GalleryBusyError(f"{not_done}, nothing was changed: {error}") from error

    def _scrub(self, what: str, removed: Removed, needles: Sequence[bytes]) -> None:
        """Wipe deleted rows from the files, or say exactly what is left where.

        ``needles`` are byte strings only the deleted rows held (the erased member id, the
        first bytes of each deleted sealed value); when the scrub is blocked the files are
        searched for them, so the message names the files that really still hold copies.
        """
        if self._engine is None:
            raise GalleryError(f"the gallery {self._db_path} is closed; open it again to use it.")
        try:
            with database.translated_errors(self._db_path):
                done = database.scrub(self._engine)
        except GalleryBusyError:
            done = False
        if done:
            return
        # The deletion itself is committed, in -wal, with its cells zeroed (secure_delete). While
        # another connection reads a snapshot older than the deletion, SQLite may not copy the
        # new pages into the database file, so the file keeps the old ones; the log cannot be
        # emptied either.
        db, wal = self._db_path, _companions(self._db_path)[0]
        retry = "let that program finish (or close it), then run `loyalnet store scrub`"
        busy = f"another program is reading an older snapshot of {db}"
        if not needles:
            raise ScrubError(
                f"{what}: {busy}, so SQLite may not overwrite its old pages yet; anything deleted "
                f"since the last complete scrub may still be in {db.name} or {wal.name}; {retry}."
            )
        holding = [path.name for path in (db, wal) if _holds_any(path, needles)]
        where = (
            f"old copies of the deleted rows remain in {' and '.join(holding)}"
            if holding
            else f"no copy of the deleted rows was found in {db.name} or {wal.name}, but "
            f"{wal.name} could not be emptied"
        )
        counts = (
            f": {removed.templates} template(s), {removed.crops} crop(s), "
            f"{removed.class_weights} class row(s) deleted"
            if removed.total
            else ""
        )
        raise ScrubError(
            f"{what}{counts}; the deletion is committed (nobody who opens the gallery sees the "
            f"deleted rows), but {busy}, so SQLite may not overwrite the old pages yet: {where}; "
            f"{retry}."
        )

    def _member_ref(self, member_id: str) -> str:
        return sealing.member_ref(self._member_ref_key, member_id)

    def _require_member(self, session: Session, member_id: str) -> MemberRow:
        member = session.get(MemberRow, member_id)
        if member is None:
            raise UnknownMemberError(
                f"no member {member_id} in this gallery; check the id, or add the member first."
            )
        return member

    def _put_member(
        self, session: Session, member_id: str, profile: sealing.Profile, now: datetime
    ) -> MemberRow:
        """Add the member with an empty consent chain, or re-seal a changed name and tier."""
        member = session.get(MemberRow, member_id)
        if member is None:
            member = MemberRow(
                member_id=member_id,
                sealed_profile=sealing.seal_profile(self._key, member_id, profile),
                consent_count=0,
                consent_head=sealing.consent_head(self._consent_key, member_id, 0, b""),
                created_at=now,
            )
            session.add(member)
            self._audit(session, AuditAction.MEMBER, member_id, {"created": 1}, now)
            return member
        try:
            current: sealing.Profile | None = sealing.open_profile(
                self._key, member_id, member.sealed_profile
            )
        except TamperedDataError:
            current = None  # a damaged name is simply replaced
        if current != profile:
            member.sealed_profile = sealing.seal_profile(self._key, member_id, profile)
            self._audit(session, AuditAction.MEMBER, member_id, {"created": 0}, now)
        return member

    def _chain(
        self, member_id: str, count: int, head: bytes, rows: Sequence[ConsentRow]
    ) -> tuple[list[Consent], bytes] | None:
        """The member's consents and last tag if every tag checks out, else None."""
        previous = b""
        consents: list[Consent] = []
        for seq, row in enumerate(rows, start=1):
            expected = sealing.consent_tag(
                self._consent_key,
                member_id,
                seq,
                previous,
                row.purposes,
                row.policy_version,
                row.granted_at,
                row.expires_at,
            )
            if row.seq != seq or not sealing.tags_equal(expected, row.tag):
                return None
            try:
                purposes = frozenset(Purpose(name) for name in row.purposes.split(",") if name)
            except ValueError:
                return None
            consents.append(Consent(purposes, row.policy_version, row.granted_at, row.expires_at))
            previous = row.tag
        closing = sealing.consent_head(self._consent_key, member_id, len(rows), previous)
        if count != len(rows) or not sealing.tags_equal(closing, head):
            return None
        return consents, previous

    def _histories(
        self, session: Session, member_id: str | None
    ) -> tuple[dict[str, list[Consent]], set[str]]:
        """Each member's authentic consents in recording order, and the members whose consent
        records fail their check (they get no history: no consent)."""
        consent_query = select(ConsentRow).order_by(
            ConsentRow.member_id, ConsentRow.seq, ConsentRow.id
        )
        member_query = select(MemberRow.member_id, MemberRow.consent_count, MemberRow.consent_head)
        if member_id is not None:
            consent_query = consent_query.where(ConsentRow.member_id == member_id)
            member_query = member_query.where(MemberRow.member_id == member_id)
        rows: dict[str, list[ConsentRow]] = defaultdict(list)
        for row in session.scalars(consent_query):
            rows[row.member_id].append(row)
        histories: dict[str, list[Consent]] = {}
        broken: set[str] = set()
        for member, count, head in session.execute(member_query):
            chain = self._chain(member, int(count), bytes(head), rows.get(member, []))
            if chain is None:
                broken.add(member)
            else:
                histories[member] = chain[0]
        return histories, broken

    def _append_consent(self, session: Session, member: MemberRow, consent: Consent) -> int:
        """Add ``consent`` at the end of the member's chain; returns tampered rows dropped.

        A chain that fails its check is dropped first (its rows already count for nothing, and
        keeping them would deny the member any consent forever); the audit record counts them.
        """
        member_id = member.member_id
        rows = list(
            session.scalars(
                select(ConsentRow)
                .where(ConsentRow.member_id == member_id)
                .order_by(ConsentRow.seq, ConsentRow.id)
            )
        )
        chain = self._chain(member_id, member.consent_count, member.consent_head, rows)
        dropped = 0
        previous = b""
        if chain is None:
            dropped = _delete_count(session, ConsentRow, member_id)
        else:
            previous = chain[1]
        seq = len(rows) + 1 if chain is not None else 1
        purposes = format_purposes(consent.purposes)
        tag = sealing.consent_tag(
            self._consent_key,
            member_id,
            seq,
            previous,
            purposes,
            consent.policy_version,
            consent.granted_at,
            consent.expires_at,
        )
        session.add(
            ConsentRow(
                member_id=member_id,
                seq=seq,
                purposes=purposes,
                policy_version=consent.policy_version,
                granted_at=consent.granted_at,
                expires_at=consent.expires_at,
                tag=tag,
            )
        )
        member.consent_count = seq
        member.consent_head = sealing.consent_head(self._consent_key, member_id, seq, tag)
        return dropped

    def _prune(
        self, session: Session, member_id: str, allowed: frozenset[Purpose]
    ) -> tuple[Removed, list[bytes]]:
        """Delete the member's biometrics that ``allowed`` does not cover.

        Templates need recognition; crops and class rows (learnt from the crops) need both
        recognition and model improvement, since crops are only ever taken at enrolment, for
        recognition. Returns the counts and the first bytes of each deleted sealed value.
        """
        needles: list[bytes] = []
        templates = crops = weights = 0
        if Purpose.RECOGNITION not in allowed:
            needles += _prefixes(session, TemplateRow.sealed_embedding, TemplateRow, member_id)
            templates = _delete_count(session, TemplateRow, member_id)
        if not {Purpose.RECOGNITION, Purpose.MODEL_IMPROVEMENT} <= allowed:
            needles += _prefixes(session, EnrolmentCropRow.sealed_crop, EnrolmentCropRow, member_id)
            needles += _prefixes(session, ClassWeightRow.sealed_weight, ClassWeightRow, member_id)
            weights = _delete_count(session, ClassWeightRow, member_id)
            crops = _delete_count(session, EnrolmentCropRow, member_id)
        return Removed(templates, crops, weights), needles

    def _store_templates(
        self,
        session: Session,
        member_id: str,
        vectors: NDArray[np.float32],
        model_version: str,
        images: NDArray[np.uint8] | None,
        consent: Consent,
        now: datetime,
    ) -> EnrolmentResult:
        session.add_all(
            TemplateRow(
                member_id=member_id,
                model_version=model_version,
                sealed_embedding=sealing.seal_embedding(
                    self._key, member_id, model_version, vector
                ),
                created_at=now,
            )
            for vector in vectors
        )
        crops_stored = 0
        if images is not None and consent.is_valid(now, Purpose.MODEL_IMPROVEMENT):
            session.add_all(
                EnrolmentCropRow(
                    member_id=member_id,
                    sealed_crop=sealing.seal_crop(self._key, member_id, image),
                    created_at=now,
                )
                for image in images
            )
            crops_stored = len(images)
        details = {
            "model_version": model_version,
            "templates_added": len(vectors),
            "crops_stored": crops_stored,
        }
        self._audit(session, AuditAction.ENROL, member_id, details, now)
        return EnrolmentResult(templates_added=len(vectors), crops_stored=crops_stored)

    def _recognisable(self, session: Session, now: datetime) -> set[str]:
        """Members whose authentic consent in force at ``now`` includes recognition."""
        histories, _broken = self._histories(session, None)
        return {
            member
            for member, history in histories.items()
            if (consent := governing_consent(history, now)) is not None
            and consent.is_valid(now, Purpose.RECOGNITION)
        }

    def _audit(
        self,
        session: Session,
        action: AuditAction,
        member_id: str | None,
        details: Mapping[str, object],
        now: datetime,
    ) -> str:
        receipt_id = uuid.uuid4().hex
        session.add(
            AuditRecordRow(
                receipt_id=receipt_id,
                action=action.value,
                at=now,
                member_ref=None if member_id is None else self._member_ref(member_id),
                details=json.dumps(dict(details), sort_keys=True),
            )
        )
        return receipt_id

    def _open_templates(
        self, model_version: str, now: datetime
    ) -> tuple[list[str], NDArray[np.float32]]:
        """Owners (sorted) and opened (M, 128) templates of searchable members."""
        with self._session(write=False) as session:
            searchable = self._recognisable(session, now)
            rows = session.execute(
                select(TemplateRow.id, TemplateRow.member_id, TemplateRow.sealed_embedding)
                .where(TemplateRow.model_version == model_version)
                .order_by(TemplateRow.member_id, TemplateRow.id)
            ).all()
        owners: list[str] = []
        vectors: list[NDArray[np.float32]] = []
        for template_id, member, sealed in rows:
            if member not in searchable:
                continue
            try:
                vectors.append(sealing.open_embedding(self._key, member, model_version, sealed))
            except TamperedDataError as error:
                raise TamperedDataError(
                    f"template {template_id} of member {member} failed its integrity check (it "
                    "was altered or moved to another member or model); restore the gallery "
                    "from backup."
                ) from error
            owners.append(member)
        if not vectors:
            return [], np.empty((0, EMBEDDING_DIM), dtype=np.float32)
        return owners, np.stack(vectors)


def _purposes(purposes: Iterable[Purpose]) -> frozenset[Purpose]:
    chosen = frozenset(Purpose(p) for p in purposes)
    if not chosen:
        raise InvalidInputError(
            "a consent needs at least one purpose; give recognition and/or model_improvement."
        )
    return chosen


def _new_consent(
    purposes: str | Iterable[Purpose], policy_version: str, retention_days: int, now: datetime
) -> Consent:
    """A checked consent granted at ``now`` for ``retention_days`` days."""
    chosen = parse_purposes(purposes) if isinstance(purposes, str) else _purposes(purposes)
    policy_version = check_label(policy_version, "the policy version")
    if isinstance(retention_days, bool) or not isinstance(retention_days, int):
        raise InvalidInputError(f"retention_days must be a whole number, not {retention_days!r}.")
    if not 1 <= retention_days <= MAX_RETENTION_DAYS:
        raise InvalidInputError(
            f"retention must last 1 to {MAX_RETENTION_DAYS} days, not {retention_days}."
        )
    return Consent(chosen, policy_version, now, now + timedelta(days=retention_days))


def _consent_details(
    consent: Consent, retention_days: int, removed: Removed, tampered: int
) -> dict[str, object]:
    """A consent audit record's details: what was agreed, and what it took away (counts)."""
    return {
        "purposes": sorted(p.value for p in consent.purposes),
        "policy_version": consent.policy_version,
        "retention_days": retention_days,
        "templates_removed": removed.templates,
        "crops_removed": removed.crops,
        "tampered_consents_removed": tampered,
    }


def _removed_details(removed: Removed) -> dict[str, object]:
    return {
        "templates_removed": removed.templates,
        "crops_removed": removed.crops,
        "class_weights_removed": removed.class_weights,
    }


_NEEDLE_BYTES = 32  # any 32 bytes of a sealed value are random: found only where it is
_MAX_NEEDLES = 256


def _prefixes(
    session: Session,
    column: Any,
    table: type[TemplateRow] | type[EnrolmentCropRow] | type[ClassWeightRow],
    member_id: str,
) -> list[bytes]:
    """The first bytes of each sealed value in ``column`` of the member's rows."""
    query = select(func.substr(column, 1, _NEEDLE_BYTES)).where(table.member_id == member_id)
    return [bytes(value) for value in session.scalars(query.limit(_MAX_NEEDLES))]


def _holds_any(path: Path, needles: Sequence[bytes]) -> bool:
    """True when the file at ``path`` contains one of ``needles`` (False when absent)."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return any(needle and needle in data for needle in needles[:_MAX_NEEDLES])


def _delete_count(
    session: Session,
    table: type[TemplateRow] | type[EnrolmentCropRow] | type[ConsentRow] | type[ClassWeightRow],
    member_id: str,
) -> int:
    count = session.scalar(
        select(func.count()).select_from(table).where(table.member_id == member_id)
    )
    session.execute(delete(table).where(table.member_id == member_id))
    return int(count or 0)


def _companions(db_path: Path) -> list[Path]:
    """SQLite's side files of ``db_path`` (write-ahead log, shared memory, rollback journal)."""
    return [db_path.with_name(db_path.name + suffix) for suffix in _DB_COMPANIONS]


def _check_structure(engine: Engine, db_path: Path) -> None:
    problems = database.quick_check(engine)
    if problems != ["ok"]:
        raise DamagedGalleryError(
            f"{db_path} is damaged (SQLite reports: {problems[0]}); restore it from backup."
        )
    missing = REQUIRED_TABLES - database.table_names(engine)
    if missing:
        raise DamagedGalleryError(
            f"{db_path} is not a loyalnet gallery or is damaged (no table "
            f"{', '.join(sorted(missing))}); restore it from backup or point at gallery.db."
        )


def _check_meta(meta: Mapping[str, bytes], key: StoreKey, db_path: Path, key_path: Path) -> None:
    version = meta.get(META_SCHEMA_VERSION)
    check = meta.get(META_KEY_CHECK)
    if version is None or check is None:
        raise DamagedGalleryError(
            f"{db_path} is not a loyalnet gallery or is damaged (no store settings); "
            "restore it from backup."
        )
    if version != str(SCHEMA_VERSION).encode():
        found = version.decode(errors="replace")
        if found.isdigit() and int(found) < SCHEMA_VERSION:
            raise DamagedGalleryError(
                f"{db_path} has gallery schema {found}, written by an older loyalnet that kept "
                f"names and consent unprotected; this loyalnet reads schema {SCHEMA_VERSION}. "
                "Run `loyalnet store migrate` to seal and authenticate it (back up the store "
                "folder first)."
            )
        raise DamagedGalleryError(
            f"{db_path} has gallery schema {found}, this loyalnet reads schema "
            f"{SCHEMA_VERSION}; use the loyalnet version that wrote it."
        )
    _check_key(check, key, db_path, key_path)


def _check_key(check: bytes, key: StoreKey, db_path: Path, key_path: Path) -> None:
    """Raises WrongKeyError unless ``key`` opens the gallery's key check."""
    try:
        opened = key.open(check, sealing.KEY_CHECK_AAD)
    except TamperedDataError:
        raise WrongKeyError(
            f"the key file {key_path} does not unlock the gallery {db_path}; use the key file "
            "created with this gallery (restore it from backup)."
        ) from None
    if opened != sealing.KEY_CHECK_PLAINTEXT:
        raise DamagedGalleryError(
            f"{db_path} has an unexpected key check; restore the gallery from backup."
        )
