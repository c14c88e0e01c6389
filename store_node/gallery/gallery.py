"""A store's member gallery: members, their consent, sealed templates, 1:N search, erasure.

One SQLite file per store, sealed with the store's key file (see :mod:`.keyfile`). The gallery
is small (under 10,000 templates), so every search opens the templates it needs afresh and
keeps no decrypted biometrics between calls.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
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
    Match,
    MemberSummary,
)

MAX_RETENTION_DAYS = 3650
_DB_COMPANIONS = ("-wal", "-shm", "-journal")


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
                another schema version.
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
        """Add a member, or set the display name and tier of an existing one (None clears)."""
        member_id = check_member_id(member_id)
        display_name = check_optional_text(display_name, "the display name")
        tier = check_optional_text(tier, "the tier")
        now = resolve_now(None)
        with self._session(write=True) as session:
            member = session.get(MemberRow, member_id)
            created = member is None
            if member is None:
                session.add(
                    MemberRow(
                        member_id=member_id, display_name=display_name, tier=tier, created_at=now
                    )
                )
            elif (member.display_name, member.tier) == (display_name, tier):
                return
            else:
                member.display_name, member.tier = display_name, tier
            self._audit(session, AuditAction.MEMBER, member_id, {"created": int(created)}, now)

    def record_consent(
        self,
        member_id: str,
        purposes: str | Iterable[Purpose],
        policy_version: str,
        retention_days: int = 365,
        now: datetime | None = None,
    ) -> Consent:
        """Record that the member consents to ``purposes`` from ``now`` for ``retention_days``.

        The new consent governs from ``now`` on. When it no longer includes model improvement,
        the member's enrolment crops are deleted (and wiped from the files) at once.

        Args:
            purposes: Purpose values, or a comma list such as "recognition,model_improvement".
            policy_version: the privacy policy the member agreed to, e.g. "2026-11".
            retention_days: days the consent (and so the templates' use) lasts, 1 to 3650.

        Raises:
            UnknownMemberError: when the member was not added first.
            PurposeError, InvalidInputError: for no or unknown purposes, or a bad retention.
        """
        member_id = check_member_id(member_id)
        chosen = parse_purposes(purposes) if isinstance(purposes, str) else _purposes(purposes)
        policy_version = check_label(policy_version, "the policy version")
        if isinstance(retention_days, bool) or not isinstance(retention_days, int):
            raise InvalidInputError(
                f"retention_days must be a whole number, not {retention_days!r}."
            )
        if not 1 <= retention_days <= MAX_RETENTION_DAYS:
            raise InvalidInputError(
                f"retention must last 1 to {MAX_RETENTION_DAYS} days, not {retention_days}."
            )
        now = resolve_now(now)
        consent = Consent(chosen, policy_version, now, now + timedelta(days=retention_days))
        with self._session(write=True) as session:
            self._require_member(session, member_id)
            session.add(
                ConsentRow(
                    member_id=member_id,
                    purposes=format_purposes(consent.purposes),
                    policy_version=consent.policy_version,
                    granted_at=consent.granted_at,
                    expires_at=consent.expires_at,
                )
            )
            crops_removed = 0
            if Purpose.MODEL_IMPROVEMENT not in chosen:
                crops_removed = _delete_count(session, EnrolmentCropRow, member_id)
            details = {
                "purposes": sorted(p.value for p in chosen),
                "policy_version": policy_version,
                "retention_days": retention_days,
                "crops_removed": crops_removed,
            }
            self._audit(session, AuditAction.CONSENT, member_id, details, now)
        if crops_removed:
            self._scrub(f"member {member_id}'s enrolment crops were deleted")
        return consent

    def consent_of(self, member_id: str, now: datetime | None = None) -> Consent | None:
        """The consent in force at ``now`` (the latest granted, if not expired), or None.

        Raises:
            UnknownMemberError: when the member is not in the gallery.
        """
        member_id = check_member_id(member_id)
        now = resolve_now(now)
        with self._session(write=False) as session:
            self._require_member(session, member_id)
            history = _consent_history(session, member_id).get(member_id, [])
        return governing_consent(history, now)

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
            consent = governing_consent(
                _consent_history(session, member_id).get(member_id, []), now
            )
            if consent is None or not consent.is_valid(now, Purpose.RECOGNITION):
                raise ConsentError(
                    f"member {member_id} has no consent for recognition in force; record their "
                    "consent with purpose 'recognition' before enrolling templates."
                )
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
        if probes.shape[0] == 0:
            return []
        if not owners:
            return [Match(None, "", -1.0, threshold) for _ in range(probes.shape[0])]
        # Rows are grouped by member (sorted), so one reduceat gives each member's best template.
        starts = [0] + [i for i in range(1, len(owners)) if owners[i] != owners[i - 1]]
        members = [owners[i] for i in starts]
        per_member = np.maximum.reduceat(probes @ templates.T, starts, axis=1)
        best = np.argmax(per_member, axis=1)
        matches = []
        for row, column in enumerate(best):
            similarity = float(np.clip(per_member[row, column], -1.0, 1.0))
            candidate = members[int(column)]
            member = candidate if similarity > threshold else None
            matches.append(Match(member, candidate, similarity, threshold))
        return matches

    def template_count(self, model_version: str, now: datetime | None = None) -> int:
        """How many templates one probe of ``model_version`` is compared with at ``now``.

        Counts the templates :meth:`identify` searches (members with consent to recognition in
        force): the number of comparisons for ``threshold_for_fpir``.
        """
        model_version = check_label(model_version, "the model version")
        now = resolve_now(now)
        with self._session(write=False) as session:
            searchable = _recognisable(session, now)
            rows = session.execute(
                select(TemplateRow.member_id, func.count())
                .where(TemplateRow.model_version == model_version)
                .group_by(TemplateRow.member_id)
            )
            return sum(int(count) for member, count in rows if member in searchable)

    def members(self, now: datetime | None = None) -> list[MemberSummary]:
        """Every member, sorted by id, with consent in force at ``now`` and counts; no faces."""
        now = resolve_now(now)
        with self._session(write=False) as session:
            histories = _consent_history(session, None)
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
            rows = session.scalars(select(MemberRow).order_by(MemberRow.member_id)).all()
            summaries = []
            for row in rows:
                consent = governing_consent(histories.get(row.member_id, []), now)
                summaries.append(
                    MemberSummary(
                        member_id=row.member_id,
                        display_name=row.display_name,
                        tier=row.tier,
                        purposes=consent.purposes if consent else frozenset(),
                        consent_expires_at=consent.expires_at if consent else None,
                        templates=templates.get(row.member_id, 0),
                        crops=crops.get(row.member_id, 0),
                        model_versions=tuple(sorted(versions.get(row.member_id, set()))),
                    )
                )
        return summaries

    # -- erasure and audit -----------------------------------------------------------------

    def erase(self, member_id: str, now: datetime | None = None) -> ErasureReceipt:
        """Forget a member: their templates, crops, consents and record, and wipe the files.

        The deletion and its audit record commit together; then the database is rebuilt and
        its write-ahead log emptied, so no file in the gallery's folder keeps the erased values.

        Raises:
            UnknownMemberError: when the member is not in the gallery.
            ScrubError: when the member was erased but another program kept the old pages
                alive; the receipt id is in the message and :meth:`scrub` finishes the job.
        """
        member_id = check_member_id(member_id)
        now = resolve_now(now)
        with self._session(write=True) as session:
            self._require_member(session, member_id)
            # Children first and explicitly, so the counts are exact and nothing relies on
            # the cascade alone.
            templates = _delete_count(session, TemplateRow, member_id)
            crops = _delete_count(session, EnrolmentCropRow, member_id)
            consents = _delete_count(session, ConsentRow, member_id)
            session.execute(delete(MemberRow).where(MemberRow.member_id == member_id))
            details = {
                "templates_removed": templates,
                "crops_removed": crops,
                "consents_removed": consents,
            }
            receipt_id = self._audit(session, AuditAction.ERASE, member_id, details, now)
        self._scrub(f"member {member_id} was erased (receipt {receipt_id})")
        return ErasureReceipt(
            receipt_id=receipt_id,
            member_ref=self._member_ref(member_id),
            erased_at=now,
            templates_removed=templates,
            crops_removed=crops,
            consents_removed=consents,
        )

    def scrub(self) -> None:
        """Rebuild the database and empty its write-ahead log, so deleted rows exist nowhere.

        Raises:
            ScrubError: when another program holds an old snapshot open.
        """
        self._scrub("the gallery was scrubbed")

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

    def _scrub(self, what: str) -> None:
        if self._engine is None:
            raise GalleryError(f"the gallery {self._db_path} is closed; open it again to use it.")
        try:
            with database.translated_errors(self._db_path):
                done = database.scrub(self._engine)
        except GalleryBusyError:
            done = False
        if not done:
            # The deletion itself is committed and its pages were zeroed (secure_delete); only
            # the rebuild and the emptying of the write-ahead log had to wait.
            raise ScrubError(
                f"{what}, but another program has {self._db_path} open, so old copies stay in "
                "its write-ahead log until every program using the gallery has closed it; "
                "close them, then scrub the gallery."
            )

    def _member_ref(self, member_id: str) -> str:
        return sealing.member_ref(self._member_ref_key, member_id)

    def _require_member(self, session: Session, member_id: str) -> None:
        if session.get(MemberRow, member_id) is None:
            raise UnknownMemberError(
                f"no member {member_id} in this gallery; check the id, or add the member first."
            )

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
            searchable = _recognisable(session, now)
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


def _consent_history(session: Session, member_id: str | None) -> dict[str, list[Consent]]:
    """Each member's consents in recording order (one member's, or everyone's for None)."""
    query = select(ConsentRow).order_by(ConsentRow.id)
    if member_id is not None:
        query = query.where(ConsentRow.member_id == member_id)
    history: dict[str, list[Consent]] = defaultdict(list)
    for row in session.scalars(query):
        purposes = frozenset(Purpose(name) for name in row.purposes.split(",") if name)
        history[row.member_id].append(
            Consent(purposes, row.policy_version, row.granted_at, row.expires_at)
        )
    return history


def _recognisable(session: Session, now: datetime) -> set[str]:
    """Members whose consent in force at ``now`` includes recognition."""
    return {
        member
        for member, history in _consent_history(session, None).items()
        if (consent := governing_consent(history, now)) is not None
        and consent.is_valid(now, Purpose.RECOGNITION)
    }


def _delete_count(
    session: Session,
    table: type[TemplateRow] | type[EnrolmentCropRow] | type[ConsentRow],
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
        raise DamagedGalleryError(
            f"{db_path} has gallery schema {version.decode(errors='replace')}, this loyalnet "
            f"reads schema {SCHEMA_VERSION}; use the loyalnet version that wrote it."
        )
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
