"""Heartbeats written behind: kept in memory, flushed to the registry in one batch a second.

At 10,000 stores heartbeating every 10 s the coordinator takes 1,000 heartbeats a second; one
transaction each would make the database the limit. A heartbeat only replaces the store's
last-seen time and numbers, so only the newest per store matters: the buffer keeps that, and
a background thread writes everything buffered in one transaction every
``flush_seconds``. A coordinator that dies loses at most that much last-seen time, never a
command or a receipt (those are written at once).

The same thread keeps the count of commands waiting per store, which every heartbeat reply
carries, so answering a heartbeat reads nothing from the database.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime

from coordinator.registry import Heartbeat, Registry

log = logging.getLogger(__name__)


class HeartbeatBuffer:
    """The newest heartbeat per store, and the commands pending per store."""

    def __init__(
        self,
        registry: Registry,
        clock: Callable[[], datetime],
        flush_seconds: float = 1.0,
    ) -> None:
        self._registry = registry
        self._clock = clock
        self._flush_seconds = flush_seconds
        self._lock = threading.Lock()
        self._buffered: dict[str, Heartbeat] = {}
        self._last_seen: dict[str, datetime] = {}
        self._pending: dict[str, int] = dict(registry.pending_counts())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat-flush", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Flush what is buffered and end the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.flush()

    def add(self, heartbeat: Heartbeat) -> int:
        """Keep ``heartbeat``; return the number of commands waiting for its store."""
        with self._lock:
            self._buffered[heartbeat.store] = heartbeat
            self._last_seen[heartbeat.store] = heartbeat.at
            return self._pending.get(heartbeat.store, 0)

    def last_seen(self) -> Mapping[str, datetime]:
        """When each store was last heard of by this process (newer than the registry's)."""
        with self._lock:
            return dict(self._last_seen)

    def pending(self, store: str) -> int:
        with self._lock:
            return self._pending.get(store, 0)

    def pending_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._pending)

    def commands_queued(self, stores: Mapping[str, int]) -> None:
        """Count newly queued commands (store -> how many) until the next refresh."""
        with self._lock:
            for store, count in stores.items():
                self._pending[store] = self._pending.get(store, 0) + count

    def command_acknowledged(self, store: str) -> None:
        with self._lock:
            self._pending[store] = max(0, self._pending.get(store, 0) - 1)

    def flush(self) -> int:
        """Write what is buffered; return how many stores' heartbeats were written."""
        with self._lock:
            batch = list(self._buffered.values())
            self._buffered.clear()
        if batch:
            self._registry.record_heartbeats(batch)
        return len(batch)

    def _run(self) -> None:
        refreshes = 0
        while not self._stop.wait(self._flush_seconds):
            try:
                self.flush()
                refreshes += 1
                # The in-memory counts drift only if another process queued commands (e.g.
                # `register-store` on the same database); re-read them now and then.
                if refreshes % 30 == 0:
                    counts = dict(self._registry.pending_counts())
                    with self._lock:
                        self._pending = counts
            except Exception:  # the thread must outlive a database hiccup
                log.exception("writing heartbeats to the registry failed; retrying")
