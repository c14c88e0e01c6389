"""Opening the registry: the engine, its per-database settings, and the schema migrations.

:func:`open_registry` brings the database's schema up to this code's newest revision before
handing out a :class:`Registry`, so a coordinator never runs against tables it does not
know. Two coordinators opening one fresh database at once take turns: PostgreSQL through an
advisory lock held by the migrating transaction, SQLite through ``BEGIN IMMEDIATE`` and the
busy timeout.

A :class:`Registry` is safe to share between the gRPC server's threads: every call opens
its own session and short transaction and returns plain dataclasses.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, create_engine, event, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
    StatementError,
)
from sqlalchemy.orm import Session, sessionmaker

from coordinator.registry import audit as audit_log
from coordinator.registry import commands, erasures, models, runs, stores
from coordinator.registry.audit import COORDINATOR
from coordinator.registry.errors import (
    RegistryConflictError,
    RegistryError,
    RegistrySchemaError,
    RegistryUnavailableError,
    RegistryValueError,
)
from coordinator.registry.locks import Lock
from coordinator.registry.records import (
    AuditRecord,
    CommandRecord,
    ErasureRecord,
    Heartbeat,
    HeartbeatResult,
    ModelVersionRecord,
    Rollout,
    RunRecord,
    StoreRecord,
)
from coordinator.registry.schema import StoreRow

MIGRATIONS = Path(__file__).with_name("migrations")
"""The Alembic script folder, shipped inside the package."""
DATABASE_FILE = "coordinator.db"
SQLITE_BUSY_TIMEOUT_S = 15.0
"""How long a SQLite writer waits for another (seconds) before "database is locked"."""
POSTGRES_CONNECT_TIMEOUT_S = 5
"""How long connecting to PostgreSQL may take (seconds) unless the URL says otherwise."""
# Alembic's `context` and `op` are process-wide proxies, so two threads migrating at once
# (two registries opened together in one process) would run each other's steps. The
# database lock already serialises one database; this one covers the process as a whole.
_ALEMBIC_LOCK = threading.Lock()
_WRITE = "loyalnet_registry_write"
"""Execution option marking the write engine, so SQLite begins with BEGIN IMMEDIATE."""


def default_database_url(folder: Path) -> str:
    """``sqlite:///<folder>/coordinator.db``, the coordinator's registry in its home folder."""
    return f"sqlite:///{(folder / DATABASE_FILE).absolute().as_posix()}"


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # The driver's own transaction handling would not put DDL in a transaction and could
    # not begin IMMEDIATE; turn it off and let _sqlite_begin say BEGIN.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        # WAL: readers never wait for the writer; synchronous=NORMAL is durable enough
        # with WAL (a power cut may lose the last commits, never corrupt the file).
        _use_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _use_wal(cursor: Any) -> None:
    """Put the database file in WAL mode, once: the mode is kept in the file.

    Switching needs the database to itself, and SQLite answers "database is locked" at once,
    without waiting out the busy timeout, when another connection (several registries opened
    together on a new file) holds it; so the switch is tried again for that long.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        (mode,) = cursor.execute("PRAGMA journal_mode").fetchone()
        if str(mode).lower() == "wal":
            return
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _sqlite_begin(connection: Connection) -> None:
    # A write transaction takes the write lock up front: one that began deferred and read
    # first could not upgrade later without failing with "database is locked".
    write = bool(connection.get_execution_options().get(_WRITE))
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _create_engine(url: URL, masked: str) -> Engine:
    backend = url.get_backend_name()
    if backend == "sqlite":
        if url.database in (None, "", ":memory:") or url.query.get("mode") == "memory":
            raise RegistryValueError(
                f"the registry database {masked} is in memory, which each connection would "
                "see empty; give a file, e.g. sqlite:///PATH/coordinator.db"
            )
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
        )
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if backend == "postgresql":
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        connect_args: dict[str, Any] = {}
        if "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT_S
        # pre_ping: a server restart must not hand the next request a dead pooled connection.
        return create_engine(url, connect_args=connect_args, pool_pre_ping=True)
    raise RegistryValueError(
        f"the registry database {masked} is neither SQLite nor PostgreSQL; use "
        "sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE"
    )


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    # ConfigParser would read a % in the path as interpolation.
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def _known(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except CommandError:
        return False


def _migrate(engine: Engine, masked: str) -> None:
    """Upgrade the schema to this code's head; nothing to do leaves the database alone."""
    script = ScriptDirectory(str(MIGRATIONS))
    heads = set(script.get_heads())
    with engine.execution_options(**{_WRITE: True}).begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": int(Lock.MIGRATIONS)}
            )
        current = set(MigrationContext.configure(connection).get_current_heads())
        unknown = sorted(revision for revision in current if not _known(script, revision))
        if unknown:
            raise RegistrySchemaError(
                f"the registry database {masked} has schema revision {', '.join(unknown)}, "
                f"which this loyalnet does not know (it knows up to {', '.join(sorted(heads))}); "
                "a newer loyalnet wrote it: upgrade loyalnet here, or point the coordinator "
                "at another database"
            )
        if current == heads:
            return
        try:
            with _ALEMBIC_LOCK:
                command.upgrade(_alembic_config(connection), "head")
        except DBAPIError as error:
            raise RegistrySchemaError(
                f"could not create the registry's tables in {masked}: {_first_line(error)}; "
                "point the coordinator at an empty database or one it created"
            ) from error


def _first_line(error: BaseException) -> str:
    cause = error.orig if isinstance(error, DBAPIError) and error.orig is not None else error
    lines = str(cause).strip().splitlines()
    return lines[0] if lines else type(cause).__name__


def _unreachable_hint(url: URL) -> str:
    if url.get_backend_name() == "sqlite":
        folder = Path(url.database or ".").absolute().parent
        return f"check that the folder {folder} exists and this user can write to it"
    return (
        "check that the PostgreSQL server is running and the URL's host, port, database, "
        "user and password are right (for the tests' server: bash scripts/postgres.sh)"
    )


def open_registry(url: str) -> Registry:
    """Connect to the registry database at ``url`` and bring its schema up to date.

    Args:
        url: ``sqlite:///PATH`` (a file; see :func:`default_database_url`) or
            ``postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE`` (``postgresql://`` is
            read the same way). PostgreSQL connects within 5 s unless the URL sets
            ``connect_timeout``.

    Raises:
        RegistryValueError: the URL is malformed, in-memory or another database kind.
        RegistryUnavailableError: the database cannot be reached or opened.
        RegistrySchemaError: its schema is newer than this code, or it holds foreign tables.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as error:
        # The text may hold a password, so it is not repeated.
        raise RegistryValueError(
            "the registry database URL is not a valid database URL; write it as "
            "sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE"
        ) from error
    masked = parsed.render_as_string(hide_password=True)
    try:
        engine = _create_engine(parsed, masked)
    except (NoSuchModuleError, ImportError) as error:
        raise RegistryValueError(
            f"no database driver for {masked} ({error}); use sqlite:/// or postgresql+psycopg://"
        ) from error
    try:
        _migrate(engine, masked)
    except RegistryError:
        engine.dispose()
        raise
    except DBAPIError as error:
        engine.dispose()
        raise RegistryUnavailableError(
            f"cannot open the registry database {masked}: {_first_line(error)}; "
            f"{_unreachable_hint(parsed)}"
        ) from error
    return Registry(engine, masked)


class Registry:
    """The coordinator's registry: stores, commands, erasures, models, runs and audit log.

    Made by :func:`open_registry`. Every method runs in its own short transaction and is
    safe to call from many threads at once. Times are timezone-aware (naive ones are
    refused) and come back in UTC. Actors are ``admin:NAME``, ``store:NAME`` or
    ``coordinator``. Methods raise :class:`RegistryError` subclasses only: ValueError for
    bad arguments, NotFound, Conflict, WrongStore, and Unavailable when the database fails.
    """

    def __init__(self, engine: Engine, masked_url: str) -> None:
        self._engine = engine
        self._url = masked_url
        reader = engine
        if engine.dialect.name == "postgresql":
            # One snapshot per read, so an erasure and its stores' answers agree.
            reader = engine.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
        self._reads = sessionmaker(bind=reader, expire_on_commit=False)
        self._writes = sessionmaker(
            bind=engine.execution_options(**{_WRITE: True}), expire_on_commit=False
        )
        self._closed = False

    @property
    def url(self) -> str:
        """The database URL with its password masked, for logs and messages."""
        return self._url

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._engine.dialect.name

    def close(self) -> None:
        """Close every pooled connection; the registry cannot be used afterwards."""
        self._closed = True
        self._engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- sessions ------------------------------------------------------------------------

    def _fail(self, error: StatementError) -> NoReturn:
        if isinstance(error.orig, RegistryError):
            # Raised by a column type while binding (e.g. a naive datetime).
            raise error.orig from None
        if isinstance(error, IntegrityError):
            raise RegistryConflictError(
                f"the registry database {self._url} refused the change because another "
                f"request changed the same records at the same time ({_first_line(error)}); "
                "retry it"
            ) from error
        if isinstance(error, OperationalError | InterfaceError):
            raise RegistryUnavailableError(
                f"the registry database {self._url} failed: {_first_line(error)}; check it "
                "is running and reachable, then retry"
            ) from error
        raise RegistryError(
            f"the registry database {self._url} failed: {_first_line(error)}"
        ) from error

    def _session(self, factory: sessionmaker[Session]) -> Iterator[Session]:
        if self._closed:
            raise RegistryError(f"the registry {self._url} is closed; open it again")
        try:
            with factory.begin() as session:
                yield session
        except StatementError as error:
            self._fail(error)

    @contextmanager
    def _reading(self) -> Iterator[Session]:
        yield from self._session(self._reads)

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        yield from self._session(self._writes)

    # -- stores --------------------------------------------------------------------------

    def register_store(
        self,
        name: str,
        public_key_pem: str,
        certificate_sha256: str,
        at: datetime,
        *,
        actor: str = COORDINATOR,
    ) -> StoreRecord:
        """Admit a store, or replace its key and certificate (lifting a revocation).

        Idempotent for the same key and certificate. A revoked store coming back with its
        old key is refused (RegistryConflictError): it needs a new key.
        """
        with self._writing() as session:
            return stores.register(session, name, public_key_pem, certificate_sha256, at, actor)

    def revoke_store(self, name: str, at: datetime, *, actor: str = COORDINATOR) -> StoreRecord:
        """Stop trusting a store (its commands stay queued; a new key re-admits it)."""
        with self._writing() as session:
            return stores.revoke(session, name, at, actor)

    def get_store(self, name: str) -> StoreRecord | None:
        with self._reading() as session:
            return stores.get(session, name)

    def list_stores(self) -> list[StoreRecord]:
        """Every registered store, revoked ones included, by name."""
        with self._reading() as session:
            return stores.list_all(session)

    def record_heartbeats(self, items: Sequence[Heartbeat]) -> HeartbeatResult:
        """Apply a batch of heartbeats (thousands at once) in one transaction and one
        executemany UPDATE; unknown stores and malformed health are reported, not fatal."""
        with self._writing() as session:
            return stores.heartbeats(session, items)

    def stores_by_model_version(self) -> dict[int, list[str]]:
        """Trusted stores by the model version their last heartbeat reported, names sorted;
        stores that never sent one are absent."""
        query = (
            select(StoreRow.model_version, StoreRow.name)
            .where(StoreRow.revoked_at.is_(None), StoreRow.model_version.is_not(None))
            .order_by(StoreRow.name)
        )
        result: dict[int, list[str]] = {}
        with self._reading() as session:
            for version, name in session.execute(query):
                if version is not None:
                    result.setdefault(version, []).append(name)
        return result

    # -- commands ------------------------------------------------------------------------

    def queue_command(
        self, store: str, kind: str, payload: Mapping[str, object], at: datetime
    ) -> CommandRecord:
        """Queue one ``adopt-model`` command for a trusted store (erasures: request_erasure;
        promotions and rollbacks queue their own)."""
        with self._writing() as session:
            return commands.queue(session, [store], kind, payload, at)[0]

    def queue_commands(
        self, store_names: Sequence[str], kind: str, payload: Mapping[str, object], at: datetime
    ) -> list[CommandRecord]:
        """:meth:`queue_command` for many stores in one transaction."""
        with self._writing() as session:
            return commands.queue(session, store_names, kind, payload, at)

    def pending_commands(self, store: str, limit: int = 100) -> list[CommandRecord]:
        """The store's unacknowledged commands, oldest first, at most ``limit`` (1-1000)."""
        with self._reading() as session:
            return commands.pending(session, store, limit)

    def pending_counts(self) -> dict[str, int]:
        """Unacknowledged commands per store name; stores with none are absent."""
        with self._reading() as session:
            return commands.pending_counts(session)

    def get_command(self, command_id: str) -> CommandRecord | None:
        with self._reading() as session:
            return commands.get(session, command_id)

    def acknowledge(
        self,
        command_id: str,
        store: str,
        outcome: str,
        receipt_body: bytes,
        receipt_signature: bytes,
        verified: bool,
        at: datetime,
    ) -> bool:
        """Record the store's receipt; False if the command was already acknowledged (the
        first receipt stands). Completes an erasure when this was its last awaited receipt.

        Raises:
            RegistryNotFoundError: no such command.
            WrongStoreError: the command is another store's.
        """
        with self._writing() as session:
            return commands.acknowledge(
                session, command_id, store, outcome, receipt_body, receipt_signature, verified, at
            )

    # -- erasures ------------------------------------------------------------------------

    def request_erasure(
        self, member_id: str, requested_by: str, stores: Sequence[str], at: datetime
    ) -> ErasureRecord:
        """Record a chain-wide erasure and queue one ``erase-member`` command per store, in
        one transaction. ``complete`` turns true (``completed_at`` set) inside the
        :meth:`acknowledge` of the last verified ``erased`` receipt."""
        with self._writing() as session:
            return erasures.request(session, member_id, requested_by, stores, at)

    def get_erasure(self, request_id: str) -> ErasureRecord | None:
        with self._reading() as session:
            return erasures.get(session, request_id)

    def list_erasures(self, limit: int = 200) -> list[ErasureRecord]:
        """The ``limit`` (1-1000) most recent erasure requests, newest first."""
        with self._reading() as session:
            return erasures.list_recent(session, limit)

    # -- model versions ------------------------------------------------------------------

    def add_model_version(
        self,
        version: int,
        sha256: str,
        size_bytes: int,
        file_name: str,
        manifest_json: str,
        signature_verified: bool,
        signing_key_id: str | None,
        created_at: datetime,
        run_id: int | None = None,
        *,
        actor: str = COORDINATOR,
    ) -> ModelVersionRecord:
        """Record a model version (>= 1); the same version and sha256 again is a no-op, a
        different sha256 for a known version is a RegistryConflictError."""
        with self._writing() as session:
            return models.add(
                session,
                version=version,
                sha256=sha256,
                size_bytes=size_bytes,
                file_name=file_name,
                manifest_json=manifest_json,
                signature_verified=signature_verified,
                signing_key_id=signing_key_id,
                created_at=created_at,
                run_id=run_id,
                actor=actor,
            )

    def list_model_versions(self) -> list[ModelVersionRecord]:
        """Every recorded version, lowest first."""
        with self._reading() as session:
            return models.list_all(session)

    def get_model_version(self, version: int) -> ModelVersionRecord | None:
        with self._reading() as session:
            return models.get(session, version)

    def promote(self, version: int, by: str, at: datetime) -> Rollout:
        """Make ``version`` (0 = pretrained) the promoted one and queue ``adopt-model`` for
        every trusted store, in one transaction. Re-promoting the current version is a
        no-op returning ``Rollout(v, v, 0)``."""
        with self._writing() as session:
            return models.promote(session, version, by, at)

    def rollback(self, by: str, at: datetime) -> Rollout:
        """Go back to the version promoted before the current one (0 when none) and queue
        ``adopt-model`` for it. RegistryConflictError when nothing is left to undo."""
        with self._writing() as session:
            return models.rollback(session, by, at)

    def promoted_version(self) -> int:
        """The version stores are told to run; 0 (pretrained) before any promotion."""
        with self._reading() as session:
            return models.promoted(session)

    # -- training runs -------------------------------------------------------------------

    def start_run(
        self, rounds_planned: int, at: datetime, *, actor: str = COORDINATOR
    ) -> RunRecord:
        with self._writing() as session:
            return runs.start(session, rounds_planned, at, actor)

    def record_round(self, run_id: int, round_number: int, metrics: Mapping[str, object]) -> None:
        """Store a finished round's (>= 1) aggregate metrics; recording it again replaces
        them. Refused once the run finished."""
        with self._writing() as session:
            runs.record_round(session, run_id, round_number, metrics)

    def finish_run(
        self,
        run_id: int,
        status: str,
        model_version: int | None,
        message: str,
        at: datetime,
        *,
        actor: str = COORDINATOR,
    ) -> RunRecord:
        """Mark a running run ``completed`` or ``failed`` with the version it produced."""
        with self._writing() as session:
            return runs.finish(session, run_id, status, model_version, message, at, actor)

    def get_run(self, run_id: int) -> RunRecord | None:
        with self._reading() as session:
            return runs.get(session, run_id)

    def list_runs(self) -> list[RunRecord]:
        """Every run with its rounds, oldest first."""
        with self._reading() as session:
            return runs.list_all(session)

    # -- audit ---------------------------------------------------------------------------

    def audit(
        self,
        actor: str,
        action: str,
        subject: str,
        details: Mapping[str, object],
        at: datetime,
    ) -> int:
        """Write one audit record on its own (e.g. a store refused a model); returns its id.

        Details are plain JSON scalars or short flat lists of them; anything else (bytes,
        nested objects, long strings or lists) is a RegistryValueError.
        """
        with self._writing() as session:
            return audit_log.write(session, actor, action, subject, details, at)

    def read_audit(
        self, limit: int = 200, before_id: int | None = None, action: str | None = None
    ) -> list[AuditRecord]:
        """Up to ``limit`` (1-1000) records, newest first, older than ``before_id`` and of
        ``action`` only when given."""
        with self._reading() as session:
            return audit_log.read(session, limit, before_id, action)

    def audit_after(self, event_id: int, limit: int = 200) -> list[AuditRecord]:
        """Up to ``limit`` records with ids above ``event_id``, oldest first (the live
        event stream; ids commit in increasing order, so resuming after the last one seen
        misses none)."""
        with self._reading() as session:
            return audit_log.after(session, event_id, limit)

    def last_audit_id(self) -> int:
        """The newest audit record's id, 0 when none (where a stream of new events starts)."""
        with self._reading() as session:
            return audit_log.last_id(session)
