"""The registry's tables as SQLAlchemy models: private to the registry, never returned.

The repository modules read and write these rows inside one short transaction and hand out
the frozen dataclasses of :mod:`coordinator.registry.records` instead, so no caller can hold
a row past its session or lazy-load from another thread.

The initial migration (``migrations/versions/0001_initial.py``) creates exactly these tables;
``tests/test_registry.py`` checks the two agree. Change both together, in a new revision.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from coordinator.registry.errors import RegistryValueError

# Named constraints let Alembic's SQLite batch mode (copy-and-move) find them again later.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

NAME_LENGTH = 128
"""Longest store name, actor or requester (characters); a certificate CN is at most 64."""

COMMAND_KINDS = ("erase-member", "adopt-model")
RUN_STATUSES = ("running", "completed", "failed")
ROLLOUT_KINDS = ("promote", "rollback")

# none_as_null: a missing value is SQL NULL, not the JSON text 'null'.
Json = JSON(none_as_null=True)
# SQLite has no 64-bit autoincrement other than its INTEGER PRIMARY KEY rowid alias.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on both databases.

    PostgreSQL keeps ``timestamptz`` and returns it in the session's time zone; SQLite keeps
    text without an offset and returns naive values. Both come back as UTC-aware here, and a
    naive datetime is refused on the way in rather than guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise RegistryValueError(
                f"the time {value.isoformat()} has no time zone; pass an aware datetime "
                "such as datetime.now(UTC)"
            )
        utc = value.astimezone(UTC)
        # SQLite's text format has no offset: write UTC wall time, read it back as UTC.
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class StoreRow(Base):
    __tablename__ = "stores"

    name: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    public_key_pem: Mapped[str] = mapped_column(Text)
    certificate_sha256: Mapped[str] = mapped_column(String(64))
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_health: Mapped[dict[str, Any] | None] = mapped_column(Json)
    model_version: Mapped[int | None] = mapped_column(Integer)


class ErasureRow(Base):
    __tablename__ = "erasure_requests"

    request_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    member_id: Mapped[str] = mapped_column(String(200))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    requested_by: Mapped[str] = mapped_column(String(NAME_LENGTH))
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CommandRow(Base):
    __tablename__ = "commands"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('erase-member', 'adopt-model')",
            name="kind",
        ),
        # A store pulls only its unacknowledged commands, oldest first: index exactly those.
        Index(
            "ix_commands_pending",
            "store",
            "id",
            postgresql_where="acknowledged_at IS NULL",
            sqlite_where="acknowledged_at IS NULL",
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    command_id: Mapped[str] = mapped_column(String(36), unique=True)
    store: Mapped[str] = mapped_column(String(NAME_LENGTH), ForeignKey("stores.name"))
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(Json)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    erasure_request_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("erasure_requests.request_id"), index=True
    )
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(String(64))
    receipt_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    receipt_signature: Mapped[bytes | None] = mapped_column(LargeBinary)
    receipt_verified: Mapped[bool] = mapped_column(Boolean, default=False)


class RunRow(Base):
    __tablename__ = "training_runs"
    __table_args__ = (
        CheckConstraint("status IN ('running', 'completed', 'failed')", name="status"),
    )

    run_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    status: Mapped[str] = mapped_column(String(16))
    rounds_planned: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    model_version: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text, default="")


class RoundRow(Base):
    __tablename__ = "training_rounds"

    run_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("training_runs.run_id"), primary_key=True
    )
    round: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    metrics: Mapped[dict[str, Any]] = mapped_column(Json)


class ModelVersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (CheckConstraint("version >= 1", name="version_positive"),)

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    file_name: Mapped[str] = mapped_column(String(255))
    manifest_json: Mapped[str] = mapped_column(Text)
    signature_verified: Mapped[bool] = mapped_column(Boolean)
    signing_key_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    run_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("training_runs.run_id"))


class RolloutRow(Base):
    """One promotion or rollback; the promotions not yet rolled back form a stack whose top
    is the promoted version (empty stack: 0, the pretrained model)."""

    __tablename__ = "rollouts"
    __table_args__ = (CheckConstraint("kind IN ('promote', 'rollback')", name="kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer)
    previous_version: Mapped[int] = mapped_column(Integer)
    promoted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    promoted_by: Mapped[str] = mapped_column(String(NAME_LENGTH))
    stores_commanded: Mapped[int] = mapped_column(Integer, default=0)
    # Set on a promotion when a later rollback undid it; rollbacks never get one.
    rolled_back_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditRow(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_action_id", "action", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(NAME_LENGTH))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(300))
    details: Mapped[dict[str, Any]] = mapped_column(Json)
