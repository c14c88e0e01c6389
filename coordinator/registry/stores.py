"""Stores: who the chain admitted, with which key, and what their last heartbeat said."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.orm import Session

from coordinator.registry import audit, locks, validation
from coordinator.registry.errors import (
    RegistryConflictError,
    RegistryNotFoundError,
    RegistryValueError,
)
from coordinator.registry.records import Heartbeat, HeartbeatResult, StoreRecord
from coordinator.registry.schema import StoreRow

_STORES = StoreRow.metadata.tables["stores"]
# One statement executed once per heartbeat (executemany): psycopg pipelines it, SQLite
# runs it as one prepared statement; an older heartbeat never overwrites a newer one.
_HEARTBEAT = (
    update(_STORES)
    .where(_STORES.c.name == bindparam("b_name"))
    .where(or_(_STORES.c.last_seen.is_(None), _STORES.c.last_seen <= bindparam("b_at")))
    .values(
        last_seen=bindparam("b_at"),
        last_health=bindparam("b_health"),
        model_version=bindparam("b_version"),
    )
)


def record(row: StoreRow) -> StoreRecord:
    health: dict[str, Any] | None = dict(row.last_health) if row.last_health else None
    return StoreRecord(
        name=row.name,
        public_key_pem=row.public_key_pem,
        certificate_sha256=row.certificate_sha256,
        registered_at=row.registered_at,
        revoked_at=row.revoked_at,
        last_seen=row.last_seen,
        last_health=health,
        model_version=row.model_version,
    )


def _sha256(value: str) -> str:
    if (
        not isinstance(value, str)
        or len(value) != 64
        or any(c not in "0123456789abcdef" for c in value.lower())
    ):
        raise RegistryValueError(
            f"certificate sha256 {value!r:.80} must be 64 hex digits (sha256 of the DER)"
        )
    return value.lower()


def register(
    session: Session,
    name: str,
    public_key_pem: str,
    certificate_sha256: str,
    at: datetime,
    actor: str,
) -> StoreRecord:
    """Admit a store, or replace its key and certificate (which also lifts a revocation).

    Registering the same key and certificate again changes nothing, so a retry is safe.

    Raises:
        RegistryConflictError: the store was revoked and comes back with the same key; a
            revoked key stays untrusted, so it needs a new one.
    """
    name = validation.text(name, "store name")
    pem = public_key_pem.strip() + "\n"
    if "BEGIN PUBLIC KEY" not in pem:
        raise RegistryValueError(
            f"store {name!r}: the public key is not a PEM 'PUBLIC KEY' block; pass the "
            "store's node key as PEM text"
        )
    sha = _sha256(certificate_sha256)
    at = validation.aware(at)
    # Two first registrations of one name must not both try to insert it.
    locks.take(session, locks.Lock.STORES)
    row = session.get(StoreRow, name, with_for_update=True)
    if row is None:
        row = StoreRow(name=name, public_key_pem=pem, certificate_sha256=sha, registered_at=at)
        session.add(row)
        session.flush()
        audit.write(session, actor, audit.STORE_REGISTERED, name, {"certificate_sha256": sha}, at)
        return record(row)
    same_key = row.public_key_pem == pem
    if same_key and row.certificate_sha256 == sha and row.revoked_at is None:
        return record(row)
    if same_key and row.revoked_at is not None:
        raise RegistryConflictError(
            f"store {name!r} was revoked on {row.revoked_at.isoformat()} with this key; "
            "issue the store a new key and certificate, then register it again"
        )
    was_revoked = row.revoked_at is not None
    row.public_key_pem = pem
    row.certificate_sha256 = sha
    row.revoked_at = None
    session.flush()
    audit.write(
        session,
        actor,
        audit.STORE_KEY_REPLACED,
        name,
        {"certificate_sha256": sha, "was_revoked": was_revoked, "key_changed": not same_key},
        at,
    )
    return record(row)


def revoke(session: Session, name: str, at: datetime, actor: str) -> StoreRecord:
    """Stop trusting a store; revoking it again keeps the first time and writes nothing."""
    row = session.get(StoreRow, name, with_for_update=True)
    if row is None:
        raise RegistryNotFoundError(f"no store named {name!r} is registered; nothing to revoke")
    if row.revoked_at is None:
        at = validation.aware(at)
        row.revoked_at = at
        session.flush()
        audit.write(session, actor, audit.STORE_REVOKED, name, {}, at)
    return record(row)


def get(session: Session, name: str) -> StoreRecord | None:
    row = session.get(StoreRow, name)
    return None if row is None else record(row)


def require_trusted(session: Session, names: Sequence[str]) -> list[str]:
    """``names`` without duplicates, in order, each a registered store not revoked.

    Raises:
        RegistryNotFoundError: some are not registered (all such names are listed).
        RegistryConflictError: some are revoked; they would never answer.
    """
    unique = list(dict.fromkeys(names))
    if not unique:
        return unique
    rows = {
        row.name: row for row in session.scalars(select(StoreRow).where(StoreRow.name.in_(unique)))
    }
    unknown = [name for name in unique if name not in rows]
    if unknown:
        raise RegistryNotFoundError(
            f"no store named {', '.join(map(repr, unknown[:10]))} is registered; register "
            "it first or leave it out"
        )
    revoked = [name for name in unique if rows[name].revoked_at is not None]
    if revoked:
        raise RegistryConflictError(
            f"store {', '.join(map(repr, revoked[:10]))} is revoked and would never answer; "
            "leave it out or register it again with a new key"
        )
    return unique


def trusted_names(session: Session) -> list[str]:
    """Every registered store that is not revoked, by name."""
    query = select(StoreRow.name).where(StoreRow.revoked_at.is_(None)).order_by(StoreRow.name)
    return list(session.scalars(query))


def list_all(session: Session) -> list[StoreRecord]:
    return [record(row) for row in session.scalars(select(StoreRow).order_by(StoreRow.name))]


def heartbeats(session: Session, items: Sequence[Heartbeat]) -> HeartbeatResult:
    """Apply a batch of heartbeats in one executemany UPDATE.

    A store that appears twice keeps its newest heartbeat. Unknown stores and malformed
    health are left out and reported rather than failing the batch: one stray or faulty
    store must not drop a thousand others' numbers.

    Raises:
        RegistryValueError: a heartbeat's time is naive (the servicer's bug, not a store's).
    """
    newest: dict[str, Heartbeat] = {}
    for item in items:
        at = validation.aware(item.at, f"heartbeat time of store {item.store!r}")
        kept = newest.get(item.store)
        if kept is None or kept.at <= at:
            newest[item.store] = item
    if not newest:
        return HeartbeatResult(recorded=0)
    known = set(session.scalars(select(StoreRow.name).where(StoreRow.name.in_(list(newest)))))
    params: list[dict[str, object]] = []
    refused: dict[str, str] = {}
    for name, item in newest.items():
        if name not in known:
            continue
        try:
            params.append(
                {
                    "b_name": name,
                    "b_at": validation.aware(item.at),
                    "b_health": validation.health(name, item.health),
                    "b_version": validation.version(item.model_version, "model_version"),
                }
            )
        except RegistryValueError as error:
            refused[name] = str(error)
    if params:
        session.execute(_HEARTBEAT, params)
    return HeartbeatResult(
        recorded=len(params), unknown_stores=tuple(sorted(set(newest) - known)), refused=refused
    )
