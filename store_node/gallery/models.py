"""The tables of a store's gallery: one SQLite file per store.

Biometrics (templates, enrolment crops, class rows) and members' names and tiers only ever
appear sealed (AES-256-GCM, see :mod:`store_node.gallery.sealing`). Consent rows stay readable
(an auditor can read who agreed to what without the key) but each carries a keyed tag, chained
to the member's previous consent and to a head tag on the member row, so an edited, copied,
reordered or deleted consent is detected and counts as no consent. The audit trail names
members only by a keyed pseudonym so it survives erasure without identifying anyone.

These classes never leave the package: callers get the dataclasses of
:mod:`store_node.gallery.records`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    DDL,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

SCHEMA_VERSION = 2
"""2: names and tiers sealed, consent rows tagged (schema 1 kept them in clear, untagged)."""

META_SCHEMA_VERSION = "schema_version"
META_KEY_CHECK = "key_check"
META_CALIBRATION = "calibration"


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC instant, stored as naive UTC text (SQLite has no time zones)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass a timezone-aware datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    """The gallery's tables."""


class MemberRow(Base):
    """A loyalty member known to this store; no biometrics, no name or tier in clear.

    The member id stays in clear: it is the key every other table refers to and what staff
    look members up by (the loyalty card number). ``consent_count`` and ``consent_head`` close
    the member's consent chain (see :mod:`store_node.gallery.sealing`): without them, deleting
    a member's newest consent (a withdrawal) would silently revive the older one.
    """

    __tablename__ = "members"

    member_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    sealed_profile: Mapped[bytes] = mapped_column(LargeBinary)  # display name and tier
    consent_count: Mapped[int] = mapped_column(Integer)
    consent_head: Mapped[bytes] = mapped_column(LargeBinary)  # HMAC over count and last tag
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ConsentRow(Base):
    """One consent a member gave; kept as history, the latest granted one governs.

    ``seq`` numbers a member's consents 1, 2, ... in recording order (the row's identity;
    ``id`` is only SQLite's); ``tag`` authenticates the member id, ``seq``, the purposes, the
    policy, both instants and the previous consent's tag, with a key derived from the store key.
    A withdrawal of every purpose is a row with no purposes that expires when it is granted.
    """

    __tablename__ = "consents"
    __table_args__ = (UniqueConstraint("member_id", "seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[str] = mapped_column(
        ForeignKey("members.member_id", ondelete="CASCADE"), index=True
    )
    seq: Mapped[int] = mapped_column(Integer)
    purposes: Mapped[str] = mapped_column(String(200))  # canonical comma list, see consent.py
    policy_version: Mapped[str] = mapped_column(String(64))
    granted_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    tag: Mapped[bytes] = mapped_column(LargeBinary)


class TemplateRow(Base):
    """One sealed face embedding of a member, produced by the model ``model_version``."""

    __tablename__ = "templates"
    __table_args__ = (Index("ix_templates_model_member", "model_version", "member_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[str] = mapped_column(
        ForeignKey("members.member_id", ondelete="CASCADE"), index=True
    )
    model_version: Mapped[str] = mapped_column(String(128))
    sealed_embedding: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class EnrolmentCropRow(Base):
    """One sealed aligned face crop, kept only under consent to model improvement."""

    __tablename__ = "enrolment_crops"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[str] = mapped_column(
        ForeignKey("members.member_id", ondelete="CASCADE"), index=True
    )
    sealed_crop: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class AuditRecordRow(Base):
    """Something that happened to the gallery; never biometrics, never a member id in clear.

    No foreign key to ``members``: the record must outlive the member it is about.
    """

    __tablename__ = "audit_records"

    id: Mapped[int] = mapped_column(primary_key=True)
    receipt_id: Mapped[str] = mapped_column(String(32), unique=True)
    action: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    member_ref: Mapped[str | None] = mapped_column(String(64), index=True)
    details: Mapped[str] = mapped_column(Text)  # JSON object of counts and labels


class StoreMetaRow(Base):
    """Store-wide settings: schema version, the key check, the current calibration."""

    __tablename__ = "store_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)


class ClassWeightRow(Base):
    """A member's sealed class row of the store's CosFace head (128 float32), never sent.

    Local training (``store_node.training``) keeps it between rounds. It exists only while the
    member has enrolment crops: the trigger below deletes it with the member's last crop (so a
    withdrawn consent to model improvement takes it too, in the same transaction), and the
    foreign key deletes it with the member (erasure).
    """

    __tablename__ = "class_weights"

    member_id: Mapped[str] = mapped_column(
        ForeignKey("members.member_id", ondelete="CASCADE"), primary_key=True
    )
    sealed_weight: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


# Created after every table exists (the trigger lives on enrolment_crops).
event.listen(
    Base.metadata,
    "after_create",
    DDL(  # type: ignore[no-untyped-call]
        "CREATE TRIGGER IF NOT EXISTS class_weights_follow_crops "
        "AFTER DELETE ON enrolment_crops "
        "WHEN NOT EXISTS (SELECT 1 FROM enrolment_crops WHERE member_id = OLD.member_id) "
        "BEGIN DELETE FROM class_weights WHERE member_id = OLD.member_id; END"
    ),
)


REQUIRED_TABLES = frozenset(Base.metadata.tables)
