"""Chain-wide erasures: one request, one ``erase-member`` command per store, one receipt each.

A request is complete when every store it was sent to answered ``erased`` with a receipt
whose signature checked out. :func:`coordinator.registry.commands.acknowledge` marks that
(``completed_at``) in the transaction of the last such receipt, so a read never has to.
The member's loyalty id stays on the request (admins must see whose erasure it is) but is
kept out of the audit log, which only names the request.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordinator.registry import audit, commands, stores, validation
from coordinator.registry.errors import RegistryValueError
from coordinator.registry.records import ERASED, REFUSED, ErasureRecord, StoreErasure
from coordinator.registry.schema import CommandRow, ErasureRow

PENDING = "pending"
MAX_LIST = 1000


def _store_part(row: CommandRow) -> StoreErasure:
    state = REFUSED
    if row.acknowledged_at is None:
        state = PENDING
    elif row.outcome == ERASED:
        state = ERASED
    return StoreErasure(
        store=row.store,
        command_id=row.command_id,
        state=state,
        receipt_verified=row.receipt_verified,
        answered_at=row.acknowledged_at,
        receipt_body=row.receipt_body,
    )


def _records(session: Session, requests: Sequence[ErasureRow]) -> list[ErasureRecord]:
    parts: dict[str, list[StoreErasure]] = defaultdict(list)
    if requests:
        query = (
            select(CommandRow)
            .where(CommandRow.erasure_request_id.in_([r.request_id for r in requests]))
            .order_by(CommandRow.store)
        )
        for row in session.scalars(query):
            if row.erasure_request_id is not None:  # always, by the query; narrows the type
                parts[row.erasure_request_id].append(_store_part(row))
    return [
        ErasureRecord(
            request_id=r.request_id,
            member_id=r.member_id,
            requested_at=r.requested_at,
            requested_by=r.requested_by,
            completed_at=r.completed_at,
            stores=tuple(parts[r.request_id]),
        )
        for r in requests
    ]


def request(
    session: Session, member_id: str, requested_by: str, store_names: Sequence[str], at: datetime
) -> ErasureRecord:
    """Record an erasure request and queue one ``erase-member`` command per store.

    Args:
        member_id: the loyalty id to forget (at most 200 characters).
        requested_by: the actor, e.g. ``admin:NAME``.
        store_names: the stores that must answer, normally every trusted one; duplicates
            are ignored.

    Raises:
        RegistryValueError: no store named, or a malformed id.
        RegistryNotFoundError, RegistryConflictError: a store is unknown or revoked.
    """
    member_id = validation.text(member_id, "member id", 200)
    requested_by = validation.text(requested_by, "requested_by")
    at = validation.aware(at)
    names = stores.require_trusted(session, store_names)
    if not names:
        raise RegistryValueError(
            "an erasure needs at least one store to answer it; register the chain's stores first"
        )
    row = ErasureRow(
        request_id=str(uuid.uuid4()),
        member_id=member_id,
        requested_at=at,
        requested_by=requested_by,
    )
    session.add(row)
    session.flush()
    payload = {"request_id": row.request_id, "member_id": member_id}
    session.add_all(commands.new_rows(names, commands.ERASE_MEMBER, payload, at, row.request_id))
    session.flush()
    audit.write(
        session, requested_by, audit.ERASURE_REQUESTED, row.request_id, {"stores": len(names)}, at
    )
    return _records(session, [row])[0]


def get(session: Session, request_id: str) -> ErasureRecord | None:
    row = session.get(ErasureRow, request_id)
    return None if row is None else _records(session, [row])[0]


def list_recent(session: Session, limit: int = 200) -> list[ErasureRecord]:
    """The ``limit`` (1-1000) most recent requests, newest first."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST:
        raise RegistryValueError(f"limit={limit!r} must be between 1 and {MAX_LIST}")
    query = (
        select(ErasureRow)
        .order_by(ErasureRow.requested_at.desc(), ErasureRow.request_id)
        .limit(limit)
    )
    return _records(session, list(session.scalars(query)))
