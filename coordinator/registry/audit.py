"""The audit log: who did what to which store, model, run or erasure, and when.

Records are written inside the transaction of the change they describe, as its last
statement: on PostgreSQL each takes the audit lock until commit, so ids become visible in
increasing order and the live event stream (``audit_after``) never skips one that commits
late. Details are plain small JSON (see :mod:`coordinator.registry.validation`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordinator.registry import locks, validation
from coordinator.registry.errors import RegistryValueError
from coordinator.registry.records import AuditRecord
from coordinator.registry.schema import AuditRow

STORE_REGISTERED = "store-registered"
STORE_KEY_REPLACED = "store-key-replaced"
STORE_REVOKED = "store-revoked"
COMMAND_ACKNOWLEDGED = "command-acknowledged"
ERASURE_REQUESTED = "erasure-requested"
ERASURE_COMPLETED = "erasure-completed"
MODEL_ADDED = "model-added"
MODEL_PROMOTED = "model-promoted"
MODEL_ROLLED_BACK = "model-rolled-back"
RUN_STARTED = "run-started"
RUN_FINISHED = "run-finished"

COORDINATOR = "coordinator"
"""The actor of what the coordinator does on its own."""

MAX_READ = 1000
"""Most records one read returns; page further with ``before_id`` or ``after``."""


def write(
    session: Session,
    actor: str,
    action: str,
    subject: str,
    details: Mapping[str, object],
    at: datetime,
) -> int:
    """Add one record to the session's transaction and return its id (>= 1)."""
    row = AuditRow(
        at=validation.aware(at),
        actor=validation.text(actor, "audit actor"),
        action=validation.text(action, "audit action", 64),
        subject=validation.text(subject, "audit subject", 300),
        details=validation.audit_details(details),
    )
    locks.take(session, locks.Lock.AUDIT)
    session.add(row)
    session.flush()
    return row.id


def _record(row: AuditRow) -> AuditRecord:
    details: dict[str, Any] = dict(row.details)
    return AuditRecord(
        id=row.id,
        at=row.at,
        actor=row.actor,
        action=row.action,
        subject=row.subject,
        details=details,
    )


def _limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_READ:
        raise RegistryValueError(f"limit={limit!r} must be between 1 and {MAX_READ}")
    return limit


def read(
    session: Session, limit: int = 200, before_id: int | None = None, action: str | None = None
) -> list[AuditRecord]:
    """Up to ``limit`` records, newest first; older than ``before_id`` and only ``action``
    when given (a page of the admin's audit view). ``before_id`` None or 0: from the newest,
    as the wire's 0 means."""
    query = select(AuditRow).order_by(AuditRow.id.desc()).limit(_limit(limit))
    if before_id:
        query = query.where(AuditRow.id < before_id)
    if action:
        query = query.where(AuditRow.action == action)
    return [_record(row) for row in session.scalars(query)]


def after(session: Session, event_id: int, limit: int = 200) -> list[AuditRecord]:
    """Up to ``limit`` records with an id above ``event_id``, oldest first (the live
    stream: call again with the last id returned)."""
    query = (
        select(AuditRow).where(AuditRow.id > event_id).order_by(AuditRow.id).limit(_limit(limit))
    )
    return [_record(row) for row in session.scalars(query)]


def last_id(session: Session) -> int:
    """The newest record's id, 0 when the log is empty (where "only new events" starts)."""
    newest = session.scalar(select(AuditRow.id).order_by(AuditRow.id.desc()).limit(1))
    return newest or 0
