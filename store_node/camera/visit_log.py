"""The store's visit events and footfall counts: ``visits.db`` in the store folder.

- **Visit events**, numbered in order, so that a client of the store (the clerk's tablet, the
  till) can read everything after the last event it saw. A member visit holds the member id,
  camera, start and end, similarity and frames used; an unknown visit the camera and times
  only. Events are kept ``EVENT_RETENTION_DAYS`` (long enough for a client to catch up), and a
  member's events are deleted when the member is erased (:func:`forget_member_visits`).
- **Footfall**: per camera and UTC hour, how many member and unknown visits; numbers only,
  kept for good.

Plain SQLite in WAL mode: the camera service writes, the command line reads at the same time.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from loyalnet.errors import LoyalnetError
from store_node.camera.visit import Visit

VISITS_NAME = "visits.db"
EVENT_RETENTION_DAYS = 7
PRUNE_EVERY_SECONDS = 3600.0
"""A running service deletes expired events at most this often (on recording a visit)."""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS visit (
    event_id INTEGER PRIMARY KEY AUTOINCREMENT,
    camera TEXT NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT NOT NULL,
    member_id TEXT,
    similarity REAL,
    frames_used INTEGER
);
CREATE INDEX IF NOT EXISTS visit_member ON visit (member_id) WHERE member_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS footfall (
    camera TEXT NOT NULL,
    hour TEXT NOT NULL,
    member_visits INTEGER NOT NULL DEFAULT 0,
    unknown_visits INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (camera, hour)
);
"""


class VisitLogError(LoyalnetError):
    """``visits.db`` cannot be opened or is damaged."""


@dataclass(frozen=True)
class VisitEvent:
    """A visit with its event number (increasing, never reused)."""

    event_id: int
    visit: Visit


@dataclass(frozen=True)
class FootfallCount:
    """Visits one camera saw in one UTC hour."""

    camera: str
    hour: datetime
    member_visits: int
    unknown_visits: int


class VisitLog:
    """The visit events and footfall of one store; open with :meth:`open`."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path
        # One connection shared by the cameras' threads: one statement or transaction at once.
        self._lock = threading.RLock()
        self._pruned_at = 0.0

    @classmethod
    def open(cls, store_dir: Path, *, create: bool = True) -> VisitLog:
        """Open (or, with ``create``, create) ``visits.db`` in ``store_dir``.

        Raises:
            VisitLogError: the file is not a visit log or cannot be opened.
        """
        path = Path(store_dir) / VISITS_NAME
        if not create and not path.is_file():
            raise VisitLogError(
                f"{store_dir} has no {VISITS_NAME} yet: no camera has recorded a visit; run "
                "`loyalnet store serve` with a camera."
            )
        try:
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA secure_delete=ON")
            db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as err:
            raise VisitLogError(
                f"{path} is not a usable visit log ({err}); move it aside and restart "
                "`loyalnet store serve` to begin a new one."
            ) from err
        return cls(db, path)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> VisitLog:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def record(self, visit: Visit) -> int:
        """Append a visit and count it in its camera's hour; its event id."""
        hour = visit.started_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        known = visit.member_id is not None
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO visit (camera, started_at, ended_at, member_id, similarity, "
                "frames_used) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    visit.camera,
                    visit.started_at.astimezone(UTC).isoformat(),
                    visit.ended_at.astimezone(UTC).isoformat(),
                    visit.member_id,
                    visit.similarity if known else None,
                    visit.frames_used if known else None,
                ),
            )
            db.execute(
                "INSERT INTO footfall (camera, hour, member_visits, unknown_visits) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (camera, hour) DO UPDATE SET "
                "member_visits = member_visits + excluded.member_visits, "
                "unknown_visits = unknown_visits + excluded.unknown_visits",
                (visit.camera, hour.isoformat(), int(known), int(not known)),
            )
            event_id = cursor.lastrowid
        assert event_id is not None
        if time.monotonic() - self._pruned_at > PRUNE_EVERY_SECONDS:
            self.prune()
        return event_id

    def events_after(self, event_id: int = 0, limit: int = 1000) -> list[VisitEvent]:
        """Up to ``limit`` events numbered above ``event_id``, in order."""
        rows: list[Any] = self._query(
            "SELECT event_id, camera, started_at, ended_at, member_id, similarity, frames_used "
            "FROM visit WHERE event_id > ? ORDER BY event_id LIMIT ?",
            (event_id, limit),
        )
        return [
            VisitEvent(
                int(row[0]),
                Visit(
                    row[1],
                    datetime.fromisoformat(row[2]),
                    datetime.fromisoformat(row[3]),
                    row[4],
                    row[5],
                    row[6],
                ),
            )
            for row in rows
        ]

    def footfall(self, since: datetime | None = None) -> list[FootfallCount]:
        """Counts per camera and hour, from the hour of ``since`` (all when None), in order."""
        start = "" if since is None else _hour(since).isoformat()
        rows: list[Any] = self._query(
            "SELECT camera, hour, member_visits, unknown_visits FROM footfall WHERE hour >= ? "
            "ORDER BY hour, camera",
            (start,),
        )
        return [FootfallCount(r[0], datetime.fromisoformat(r[1]), r[2], r[3]) for r in rows]

    def totals_since(self, since: datetime) -> tuple[int, int]:
        """(member visits, unknown visits) from the hour of ``since`` on, all cameras."""
        row: Any = self._query(
            "SELECT COALESCE(SUM(member_visits), 0), COALESCE(SUM(unknown_visits), 0) "
            "FROM footfall WHERE hour >= ?",
            (_hour(since).isoformat(),),
        )[0]
        return int(row[0]), int(row[1])

    def forget_member(self, member_id: str) -> int:
        """Delete every event of ``member_id`` (footfall counts stay); how many."""
        with self._transaction() as db:
            deleted = db.execute("DELETE FROM visit WHERE member_id = ?", (member_id,)).rowcount
        # secure_delete zeroes the rows in the database file; the checkpoint empties the WAL,
        # which would otherwise hold the deleted pages until the next automatic checkpoint.
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(deleted)

    def prune(self, now: datetime | None = None) -> int:
        """Delete events that ended more than ``EVENT_RETENTION_DAYS`` ago; how many."""
        now = now if now is not None else datetime.now(UTC)
        self._pruned_at = time.monotonic()
        cutoff = (now - timedelta(days=EVENT_RETENTION_DAYS)).isoformat()
        with self._transaction() as db:
            deleted = db.execute("DELETE FROM visit WHERE ended_at < ?", (cutoff,)).rowcount
        return int(deleted)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, parameters: tuple[object, ...]) -> list[tuple[object, ...]]:
        with self._lock:
            return self._db.execute(sql, parameters).fetchall()


def forget_member_visits(store_dir: Path, member_id: str) -> int:
    """Delete ``member_id``'s visit events from the store's log, if it has one; how many.

    Called with every erasure of a member (the command line's and the control plane's).
    """
    if not (Path(store_dir) / VISITS_NAME).is_file():
        return 0
    with VisitLog.open(store_dir, create=False) as log:
        return log.forget_member(member_id)


def _hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
