"""The store's outbox: which chain commands it saw, carried out and reported, and their receipts.

``sync.db`` in the store folder, a small SQLite file (WAL, ``synchronous=FULL``, mode 0600)
that only ``loyalnet store serve`` writes; a lock file (``sync.db.lock``) keeps a second
``serve`` on the same store from carrying out the same commands twice. It holds:

- one row per command the coordinator sent: its id and kind, its state, how often the store
  tried it, and once done the signed receipt, byte for byte:

  | state | meaning |
  | --- | --- |
  | ``received`` | seen, not carried out yet (a busy gallery, a blocked scrub): tried again |
  | ``done`` | carried out (or refused); the receipt is written, not yet acknowledged |
  | ``delivered`` | the coordinator acknowledged the receipt, which is then dropped here |

- the chain's model version the store recognises with (0 = the pretrained model), and the
  model whose threshold still has to be calibrated after an adoption, if any.

A receipt is written *before* it is sent, in the same transaction that marks the command done,
so a crash or a lost connection can only delay it: undelivered receipts are sent again after a
restart, and a command already done is never carried out again (its stored receipt is sent).

Nothing biometric is kept here. The only member data is the member id inside an erasure's
receipt, kept only until the coordinator acknowledged it: the receipt is the chain's proof and
lives on at the coordinator, while the store keeps no trace of the member it erased. Delivered
receipts are cleared with ``secure_delete`` on and the write-ahead log truncated, so the id
does not linger in free pages either.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from loyalnet.errors import LoyalnetError

OUTBOX_NAME = "sync.db"
SCHEMA_VERSION = 1
MODEL_VERSION_KEY = "chain_model_version"
CALIBRATION_DUE_KEY = "calibration_due"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (
    command_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('received', 'done', 'delivered')),
    attempts INTEGER NOT NULL DEFAULT 0,
    received_at TEXT NOT NULL,
    done_at TEXT,
    delivered_at TEXT,
    receipt_body BLOB,
    receipt_signature BLOB,
    CHECK ((state = 'done') = (receipt_body IS NOT NULL))
);
CREATE TABLE IF NOT EXISTS store_state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class OutboxError(LoyalnetError):
    """The outbox cannot be opened or written."""


class CommandState(StrEnum):
    """Where a command stands in the store (see the module docstring)."""

    RECEIVED = "received"
    DONE = "done"
    DELIVERED = "delivered"


@dataclass(frozen=True)
class StoredReceipt:
    """A signed receipt as written: ``body`` is canonical JSON, ``signature`` the node key's."""

    command_id: str
    body: bytes
    signature: bytes


@dataclass(frozen=True)
class CommandRecord:
    """What the outbox knows about one command.

    Attributes:
        attempts: how often the store started carrying it out, this time included; above 1
            a previous attempt may have changed the gallery half-way (an erasure whose
            scrub was blocked), which the command's handler must finish.
        receipt: the signed receipt once the command is done, else None.
    """

    command_id: str
    kind: str
    state: CommandState
    attempts: int
    receipt: StoredReceipt | None


class Outbox:
    """The store's command log and receipts (``sync.db``); see the module docstring.

    Safe to share between threads (one lock around the one connection); one process at a time
    per store (a lock file). Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: Path, connection: sqlite3.Connection, lock_file: IO[bytes]) -> None:
        """Use :meth:`open`."""
        self._path = path
        self._connection: sqlite3.Connection | None = connection
        self._lock_file = lock_file
        self._lock = threading.Lock()

    @classmethod
    def open(cls, store_dir: Path) -> Outbox:
        """Open (or create) the outbox of the store in ``store_dir``.

        Raises:
            OutboxError: another process holds it (a second ``loyalnet store serve``), or the
                file cannot be created or read.
        """
        path = Path(store_dir) / OUTBOX_NAME
        lock_path = path.with_name(path.name + ".lock")
        try:
            lock_file = open(lock_path, "ab")  # noqa: SIM115 (held open for the outbox's life)
        except OSError as err:
            raise OutboxError(
                f"cannot open {lock_path} ({err.strerror}); check that the store folder is "
                "writable."
            ) from err
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            lock_file.close()
            raise OutboxError(
                f"another process uses {path} (a second `loyalnet store serve` on this store?); "
                "stop it first: one store runs one serve."
            ) from err
        try:
            if not path.exists():
                # Created 0600: erasure receipts name the member the chain asked to forget.
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=FULL")
                # Cleared receipts are overwritten, not just unlinked from the b-tree.
                connection.execute("PRAGMA secure_delete=ON")
                version = connection.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise OutboxError(
                        f"{path} was written by a newer loyalnet (schema {version}); upgrade "
                        "loyalnet on this store."
                    )
                connection.executescript(_SCHEMA)
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            except BaseException:
                connection.close()
                raise
        except (OSError, sqlite3.Error) as err:
            lock_file.close()
            raise OutboxError(
                f"cannot open the outbox {path} ({err}); move the damaged file away to start "
                "an empty one (undelivered receipts in it would be lost)."
            ) from err
        except BaseException:
            lock_file.close()
            raise
        return cls(path, connection, lock_file)

    @property
    def path(self) -> Path:
        return self._path

    def close(self) -> None:
        """Close the database and release the lock file."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
                self._lock_file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- commands ------------------------------------------------------------------------

    def begin_attempt(self, command_id: str, kind: str) -> CommandRecord:
        """The record of ``command_id``, counting one more attempt if it is not done yet.

        A command seen for the first time is recorded as ``received`` with one attempt.
        """
        now = _now()
        with self._transaction() as connection:
            connection.execute(
                "INSERT INTO commands (command_id, kind, state, attempts, received_at) "
                "VALUES (?, ?, 'received', 0, ?) ON CONFLICT (command_id) DO NOTHING",
                (command_id, kind, now),
            )
            connection.execute(
                "UPDATE commands SET attempts = attempts + 1 "
                "WHERE command_id = ? AND state = 'received'",
                (command_id,),
            )
            record = self._record(connection, command_id)
        assert record is not None  # inserted above, in this transaction
        return record

    def record(self, command_id: str) -> CommandRecord | None:
        """What the outbox knows about ``command_id``, or None if it never saw it."""
        with self._transaction() as connection:
            return self._record(connection, command_id)

    def complete(
        self,
        command_id: str,
        body: bytes,
        signature: bytes,
        *,
        model_version: int | None = None,
        calibration_due: str | None = None,
    ) -> None:
        """Store the signed receipt of ``command_id`` and mark it done, in one transaction.

        Args:
            model_version: the chain's model version the store recognises with from now on,
                when the command changed it.
            calibration_due: the model version (store name) whose threshold still has to be
                calibrated, when the command adopted one; see :meth:`calibration_due`.

        Raises:
            OutboxError: the command was never begun, or is done already.
        """
        with self._transaction() as connection:
            changed = connection.execute(
                "UPDATE commands SET state = 'done', done_at = ?, receipt_body = ?, "
                "receipt_signature = ? WHERE command_id = ? AND state = 'received'",
                (_now(), body, signature, command_id),
            ).rowcount
            if changed != 1:
                raise OutboxError(
                    f"command {command_id} is not waiting to be carried out; its first receipt "
                    "stands."
                )
            if model_version is not None:
                self._set(connection, MODEL_VERSION_KEY, str(model_version))
            if calibration_due is not None:
                self._set(connection, CALIBRATION_DUE_KEY, calibration_due)

    def mark_delivered(self, command_id: str) -> None:
        """The coordinator acknowledged the receipt of ``command_id``: drop the receipt here."""
        with self._transaction() as connection:
            connection.execute(
                "UPDATE commands SET state = 'delivered', delivered_at = ?, "
                "receipt_body = NULL, receipt_signature = NULL "
                "WHERE command_id = ? AND state = 'done'",
                (_now(), command_id),
            )
        with self._lock:
            # The old page images sit in the WAL until a checkpoint; empty it now. A reader
            # holding an old snapshot only delays this to the next delivery.
            if self._connection is not None:
                self._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def undelivered(self) -> list[StoredReceipt]:
        """Receipts written and not yet acknowledged, oldest first."""
        with self._transaction() as connection:
            rows = connection.execute(
                "SELECT command_id, receipt_body, receipt_signature FROM commands "
                "WHERE state = 'done' ORDER BY done_at, rowid"
            ).fetchall()
        return [StoredReceipt(str(c), bytes(b), bytes(s)) for c, b, s in rows]

    def pending(self) -> int:
        """How many receipts wait to be delivered (the heartbeat's ``outbox_pending``)."""
        with self._transaction() as connection:
            row = connection.execute("SELECT count(*) FROM commands WHERE state = 'done'")
            return int(row.fetchone()[0])

    # -- the store's state towards the chain ---------------------------------------------

    def model_version(self) -> int:
        """The chain's model version the store recognises with; 0 = the pretrained model."""
        with self._transaction() as connection:
            value = self._get(connection, MODEL_VERSION_KEY)
        return int(value) if value is not None else 0

    def calibration_due(self) -> str | None:
        """The adopted model version whose threshold is still to be calibrated, or None."""
        with self._transaction() as connection:
            return self._get(connection, CALIBRATION_DUE_KEY)

    def calibration_done(self, model_version: str) -> None:
        """The threshold of ``model_version`` is calibrated (a later adoption's stays due)."""
        with self._transaction() as connection:
            connection.execute(
                "DELETE FROM store_state WHERE key = ? AND value = ?",
                (CALIBRATION_DUE_KEY, model_version),
            )

    # -- internals -----------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One immediate transaction under the lock: committed, or rolled back on error."""
        with self._lock:
            connection = self._connection
            if connection is None:
                raise OutboxError(f"the outbox {self._path} is closed.")
            try:
                connection.execute("BEGIN IMMEDIATE")
                try:
                    yield connection
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
                connection.execute("COMMIT")
            except sqlite3.Error as err:
                raise OutboxError(
                    f"cannot write the outbox {self._path} ({err}); check the disk's space "
                    "and the file's permissions."
                ) from err

    @staticmethod
    def _record(connection: sqlite3.Connection, command_id: str) -> CommandRecord | None:
        row = connection.execute(
            "SELECT command_id, kind, state, attempts, receipt_body, receipt_signature "
            "FROM commands WHERE command_id = ?",
            (command_id,),
        ).fetchone()
        if row is None:
            return None
        command, kind, state, attempts, body, signature = row
        receipt = (
            None if body is None else StoredReceipt(str(command), bytes(body), bytes(signature))
        )
        return CommandRecord(str(command), str(kind), CommandState(state), int(attempts), receipt)

    @staticmethod
    def _get(connection: sqlite3.Connection, key: str) -> str | None:
        row = connection.execute("SELECT value FROM store_state WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @staticmethod
    def _set(connection: sqlite3.Connection, key: str, value: str) -> None:
        connection.execute(
            "INSERT INTO store_state (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
