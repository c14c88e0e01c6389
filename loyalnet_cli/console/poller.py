"""The data poller: a snapshot every few seconds, retried with back-off when it fails.

It runs in a worker thread because gRPC calls block; it reports through callbacks, which
the app turns into messages for the UI thread. ``refresh_now`` (a chain event arrived) cuts
the current wait short; ``stop`` ends the loop and aborts a call in flight by closing its
connection, so quitting never waits for a timeout.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import grpc

from coordinator.admin_client import AdminError
from loyalnet_cli.console.backoff import Backoff
from loyalnet_cli.console.link import AdminSource, Clock, ConsoleLink
from loyalnet_cli.console.snapshot import ChainSnapshot, fetch_snapshot

UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@dataclass(frozen=True)
class LinkDown:
    """The coordinator did not answer (or refused) since ``since``; next try at ``retry_at``."""

    address: str
    since: datetime
    retry_at: datetime
    message: str
    unreachable: bool


class Poller:
    """Fetches :class:`ChainSnapshot` objects until stopped; see the module docstring."""

    def __init__(
        self,
        link: ConsoleLink,
        clock: Clock,
        on_snapshot: Callable[[ChainSnapshot], object],
        on_down: Callable[[LinkDown], object],
        interval: float,
        backoff: Backoff,
    ) -> None:
        self._link = link
        self._clock = clock
        self._on_snapshot = on_snapshot
        self._on_down = on_down
        self._interval = interval
        self._backoff = backoff
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._client: AdminSource | None = None

    def run(self) -> None:
        """Poll until :meth:`stop`; meant for a worker thread."""
        down_since: datetime | None = None
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                snapshot = fetch_snapshot(self._connection(), self._clock)
            except Exception as err:  # any failure is shown in the banner and retried
                self._drop_connection()
                if self._stopping.is_set():
                    break
                delay = self._backoff.next()
                now = self._clock()
                down_since = down_since or now
                self._on_down(
                    LinkDown(
                        address=self._link.address,
                        since=down_since,
                        retry_at=now + timedelta(seconds=delay),
                        message=str(err),
                        unreachable=isinstance(err, AdminError) and err.code in UNREACHABLE,
                    )
                )
            else:
                down_since = None
                self._backoff.reset()
                delay = self._interval
                self._on_snapshot(snapshot)
            self._wake.wait(delay)
        self._drop_connection()

    def refresh_now(self) -> None:
        """Fetch at once instead of waiting out the interval or the back-off."""
        self._wake.set()

    def stop(self) -> None:
        """End :meth:`run` soon; safe from any thread."""
        self._stopping.set()
        self._wake.set()
        self._drop_connection()

    def _connection(self) -> AdminSource:
        with self._lock:
            if self._client is None:
                self._client = self._link.connect()
            return self._client

    def _drop_connection(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
