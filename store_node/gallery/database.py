"""The SQLite connection of a gallery: pragmas on every connection, transactions, wiping.

Every connection gets:

- ``foreign_keys=ON`` so the ``ON DELETE CASCADE`` of child rows is enforced;
- ``secure_delete=ON`` so SQLite overwrites deleted rows and freed pages with zeros instead of
  leaving them in free space;
- ``temp_store=MEMORY`` so VACUUM and sorts never spill copies of rows to temporary files;
- ``busy_timeout`` so a short lock held by another program is waited for, not an error.

The database runs in WAL mode (set once at creation; it is persistent). After an erasure,
:func:`scrub` rebuilds the file (VACUUM) and checkpoints the write-ahead log with TRUNCATE, so no
old page, neither in the database file nor in ``-wal``, keeps the erased values.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.pool import QueuePool

from store_node.gallery.errors import DamagedGalleryError, GalleryBusyError, GalleryError

BUSY_TIMEOUT_MS = 5000
_WRITE_OPTION = "loyalnet_write"
_CONNECTION_PRAGMAS = (
    "PRAGMA foreign_keys = ON",
    "PRAGMA secure_delete = ON",
    "PRAGMA temp_store = MEMORY",
    f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",
)


def open_engine(db_path: Path) -> Engine:
    """An engine on the existing SQLite file ``db_path``; it never creates the file.

    Transactions opened through :func:`writer` start with ``BEGIN IMMEDIATE`` (they take the
    write lock up front, so a read-then-write cannot fail halfway); others with ``BEGIN``.
    """
    # mode=rw: a missing file must be an error, not a fresh empty database.
    uri = f"{db_path.resolve().as_uri()}?mode=rw"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)

    engine = create_engine("sqlite+pysqlite://", creator=connect, poolclass=QueuePool)
    event.listen(engine, "connect", _on_connect)
    event.listen(engine, "begin", _on_begin)
    return engine


def writer(engine: Engine) -> Engine:
    """The same engine, with transactions that take the write lock when they begin."""
    return engine.execution_options(**{_WRITE_OPTION: True})


def _on_connect(dbapi_connection: Any, _record: Any) -> None:
    # The sqlite3 module's own implicit BEGIN is switched off so SQLAlchemy's "begin" event
    # (below) controls when transactions start, and pragmas run outside any transaction.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _CONNECTION_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _on_begin(connection: Connection) -> None:
    immediate = connection.get_execution_options().get(_WRITE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def enable_wal(engine: Engine) -> None:
    """Switch the database to WAL mode (persistent; done once, at creation)."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("PRAGMA journal_mode = WAL")
        (mode,) = _one_row(cursor.fetchone())
        cursor.close()
    finally:
        raw.close()
    if str(mode).lower() != "wal":
        raise GalleryError(
            f"SQLite refused write-ahead logging (journal mode is {mode}); "
            "put the store on a local disk, not a network share."
        )


def scrub(engine: Engine) -> bool:
    """Rewrite the database so deleted rows survive in no file; True when fully done.

    VACUUM rebuilds the database without free pages; the checkpoint then copies the rebuilt
    pages into the database file and truncates ``-wal`` to zero bytes. False means another
    program kept reading an old snapshot past the busy timeout, so the log could not be emptied:
    scrub again once it is closed.
    """
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("VACUUM")
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        busy, _log_frames, _checkpointed = _one_row(cursor.fetchone())
        cursor.close()
    finally:
        raw.close()
    return int(busy) == 0


def _one_row(row: Any) -> tuple[Any, ...]:
    if row is None:
        raise GalleryError("SQLite answered a pragma with no row; update SQLite or loyalnet.")
    return tuple(row)


def quick_check(engine: Engine) -> list[str]:
    """SQLite's structural check of the file (read-only); ``["ok"]`` when sound."""
    with engine.connect() as connection:
        return [str(row[0]) for row in connection.exec_driver_sql("PRAGMA quick_check")]


def table_names(engine: Engine) -> set[str]:
    """The names of the tables in the database (read-only)."""
    with engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {str(row[0]) for row in rows}


@contextmanager
def translated_errors(db_path: Path) -> Iterator[None]:
    """Turn SQLite failures inside the block into gallery errors that say what to do."""
    try:
        yield
    except exc.OperationalError as error:
        detail = str(error.orig)
        if "locked" in detail or "busy" in detail:
            raise GalleryBusyError(
                f"the gallery {db_path} is locked by another program; wait for it to finish "
                "and retry."
            ) from error
        raise GalleryError(
            f"the gallery {db_path} could not be read or written ({detail}); check the disk "
            "and the file's permissions, or restore it from backup."
        ) from error
    except exc.IntegrityError as error:
        raise GalleryBusyError(
            f"the gallery {db_path} was changed by another program at the same time; retry."
        ) from error
    except exc.DatabaseError as error:
        raise DamagedGalleryError(
            f"{db_path} is not a loyalnet gallery or is damaged ({error.orig}); "
            "restore it from backup."
        ) from error
