"""Transaction-scoped locks for the few writes that read before they decide.

On PostgreSQL (READ COMMITTED) two transactions can each read "nothing promoted yet" and
both act on it; an advisory lock held until commit makes them take turns. SQLite needs
none: the registry begins every write transaction with ``BEGIN IMMEDIATE``, which already
lets one writer in at a time.
"""

from __future__ import annotations

from enum import IntEnum

from sqlalchemy import text
from sqlalchemy.orm import Session


class Lock(IntEnum):
    """Advisory lock keys; the high bits spell "loyl" so they do not meet other apps' keys."""

    MIGRATIONS = 0x6C6F796C_0001
    AUDIT = 0x6C6F796C_0002
    ROLLOUTS = 0x6C6F796C_0003
    STORES = 0x6C6F796C_0004
    MODEL_VERSIONS = 0x6C6F796C_0005


def take(session: Session, lock: Lock) -> None:
    """Hold ``lock`` until the session's transaction ends (PostgreSQL; no-op on SQLite)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": int(lock)})
