"""Commands: what each store must do next, and the signed receipt it answered with.

A command stays pending until its store acknowledges it; the first receipt stands, so a
store that retries after a lost reply gets ``False`` instead of overwriting what it said.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from coordinator.registry import audit, stores, validation
from coordinator.registry.errors import (
    RegistryNotFoundError,
    RegistryValueError,
    WrongStoreError,
)
from coordinator.registry.records import ERASED, CommandRecord
from coordinator.registry.schema import CommandRow, ErasureRow

ERASE_MEMBER = "erase-member"
ADOPT_MODEL = "adopt-model"
MAX_PULL = 1000
"""Most commands one pull returns."""

_ADOPT_FIELDS = {"version": int, "sha256": str, "size_bytes": int, "manifest_json": str}


def record(row: CommandRow) -> CommandRecord:
    payload: dict[str, Any] = dict(row.payload)
    return CommandRecord(
        command_id=row.command_id,
        store=row.store,
        kind=row.kind,
        payload=payload,
        issued_at=row.issued_at,
        acknowledged_at=row.acknowledged_at,
        outcome=row.outcome,
        receipt_body=row.receipt_body,
        receipt_signature=row.receipt_signature,
        receipt_verified=row.receipt_verified,
    )


def new_rows(
    store_names: Sequence[str],
    kind: str,
    payload: Mapping[str, object],
    at: datetime,
    erasure_request_id: str | None = None,
) -> list[CommandRow]:
    """One unsaved command per store, each with its own random id."""
    return [
        CommandRow(
            command_id=str(uuid.uuid4()),
            store=name,
            kind=kind,
            payload=dict(payload),
            issued_at=at,
            erasure_request_id=erasure_request_id,
            receipt_verified=False,
        )
        for name in store_names
    ]


def adopt_payload(
    version: int, sha256: str, size_bytes: int, manifest_json: str
) -> dict[str, object]:
    """The ``adopt-model`` payload (``AdoptModel`` on the wire); version 0 has empty fields."""
    return {
        "version": version,
        "sha256": sha256,
        "size_bytes": size_bytes,
        "manifest_json": manifest_json,
    }


def queue(
    session: Session,
    store_names: Sequence[str],
    kind: str,
    payload: Mapping[str, object],
    at: datetime,
) -> list[CommandRecord]:
    """Queue an ``adopt-model`` command for each store (one transaction for all).

    Erasures are queued by ``request_erasure`` only, which ties each command to its request.

    Raises:
        RegistryValueError: another kind, or a payload without the ``AdoptModel`` fields.
        RegistryNotFoundError, RegistryConflictError: a store is unknown or revoked.
    """
    if kind == ERASE_MEMBER:
        raise RegistryValueError(
            "erase-member commands belong to an erasure request; use request_erasure"
        )
    if kind != ADOPT_MODEL:
        raise RegistryValueError(f"command kind {kind!r} is unknown; use {ADOPT_MODEL!r}")
    clean = validation.payload(payload)
    for key, kind_type in _ADOPT_FIELDS.items():
        value = clean.get(key)
        if isinstance(value, bool) or not isinstance(value, kind_type):
            raise RegistryValueError(
                f"adopt-model payload needs {key!r} as {kind_type.__name__}; "
                "build it with commands.adopt_payload"
            )
    names = stores.require_trusted(session, store_names)
    rows = new_rows(names, kind, clean, validation.aware(at))
    session.add_all(rows)
    session.flush()
    return [record(row) for row in rows]


def pending(session: Session, store: str, limit: int) -> list[CommandRecord]:
    """The store's unacknowledged commands, oldest first, at most ``limit`` (1-1000)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PULL:
        raise RegistryValueError(f"limit={limit!r} must be between 1 and {MAX_PULL}")
    query = (
        select(CommandRow)
        .where(CommandRow.store == store, CommandRow.acknowledged_at.is_(None))
        .order_by(CommandRow.id)
        .limit(limit)
    )
    return [record(row) for row in session.scalars(query)]


def pending_counts(session: Session) -> dict[str, int]:
    """Unacknowledged commands per store; stores with none are absent (read them as 0)."""
    query = (
        select(CommandRow.store, func.count())
        .where(CommandRow.acknowledged_at.is_(None))
        .group_by(CommandRow.store)
    )
    return {store: count for store, count in session.execute(query)}


def get(session: Session, command_id: str) -> CommandRecord | None:
    row = session.scalar(select(CommandRow).where(CommandRow.command_id == command_id))
    return None if row is None else record(row)


def acknowledge(
    session: Session,
    command_id: str,
    store: str,
    outcome: str,
    receipt_body: bytes,
    receipt_signature: bytes,
    verified: bool,
    at: datetime,
) -> bool:
    """Record a store's receipt for its command; False when one was already recorded.

    For an ``erase-member`` command this also marks the erasure complete, in the same
    transaction, when this receipt was the last one it waited for (every store ``erased``,
    every receipt verified), and audits that.

    Raises:
        RegistryNotFoundError: no command has this id.
        WrongStoreError: the command is addressed to another store.
    """
    outcome = validation.text(outcome, "receipt outcome", 64)
    at = validation.aware(at)
    if not isinstance(receipt_body, bytes) or not isinstance(receipt_signature, bytes):
        raise RegistryValueError("receipt body and signature must be bytes, as the store sent")
    row = session.scalar(select(CommandRow).where(CommandRow.command_id == command_id))
    if row is None:
        raise RegistryNotFoundError(
            f"no command has id {command_id!r}; the store should pull its commands again"
        )
    if row.store != store:
        raise WrongStoreError(
            f"command {command_id!r} is addressed to another store, not {store!r}; a store "
            "acknowledges only its own commands"
        )
    erasure: ErasureRow | None = None
    if row.erasure_request_id is not None:
        # Locked before the update so two stores' last receipts take turns: the second one
        # then sees the first and can tell the erasure is complete.
        erasure = session.scalar(
            select(ErasureRow)
            .where(ErasureRow.request_id == row.erasure_request_id)
            .with_for_update()
        )
    # Conditional, so of two concurrent receipts for one command only the first lands.
    changed = session.execute(
        update(CommandRow)
        .where(CommandRow.command_id == command_id, CommandRow.acknowledged_at.is_(None))
        .values(
            acknowledged_at=at,
            outcome=outcome,
            receipt_body=receipt_body,
            receipt_signature=receipt_signature,
            receipt_verified=bool(verified),
        )
        .returning(CommandRow.id)
        .execution_options(synchronize_session=False)
    ).first()
    if changed is None:
        return False
    completed = erasure is not None and _complete_if_done(session, erasure, at)
    details: dict[str, object] = {"kind": row.kind, "outcome": outcome, "verified": verified}
    if erasure is not None:
        details["request_id"] = erasure.request_id
    audit.write(session, f"store:{store}", audit.COMMAND_ACKNOWLEDGED, command_id, details, at)
    if completed and erasure is not None:
        audit.write(
            session,
            audit.COORDINATOR,
            audit.ERASURE_COMPLETED,
            erasure.request_id,
            {"stores": _store_count(session, erasure.request_id)},
            at,
        )
    return True


def _store_count(session: Session, request_id: str) -> int:
    query = select(func.count()).where(CommandRow.erasure_request_id == request_id)
    return session.scalar(query) or 0


def _complete_if_done(session: Session, erasure: ErasureRow, at: datetime) -> bool:
    """Set the erasure's completed_at if every store has now erased with a verified
    receipt; True when this call completed it."""
    if erasure.completed_at is not None:
        return False
    outstanding = session.scalar(
        select(func.count()).where(
            CommandRow.erasure_request_id == erasure.request_id,
            ~(
                CommandRow.acknowledged_at.is_not(None)
                & (CommandRow.outcome == ERASED)
                & CommandRow.receipt_verified.is_(True)
            ),
        )
    )
    if outstanding:
        return False
    erasure.completed_at = at
    session.flush()
    return True
