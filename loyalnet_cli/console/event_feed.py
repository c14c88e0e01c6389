"""The live event stream (``WatchEvents``), kept open in a worker thread and reopened after
any failure.

It resumes after the newest event it knows of: the last one it delivered, or the newest audit
record the poller saw, whichever is later. So events that happen while the coordinator
restarts, or between the first poll and the stream's first opening, are not missed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from loyalnet.chain.v1 import chain_pb2
from loyalnet_cli.console.backoff import Backoff
from loyalnet_cli.console.link import AdminSource, ConsoleLink


class EventFeed:
    """Delivers chain events to ``on_event`` until stopped."""

    def __init__(
        self,
        link: ConsoleLink,
        on_event: Callable[[chain_pb2.ChainEvent], object],
        backoff: Backoff,
        known: Callable[[], int] = lambda: 0,
    ) -> None:
        self._link = link
        self._on_event = on_event
        self._known = known
        self._backoff = backoff
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._client: AdminSource | None = None
        self._after = 0

    def run(self) -> None:
        """Follow the stream until :meth:`stop`; meant for a worker thread."""
        while not self._stopping.is_set():
            opened = time.monotonic()
            try:
                after = max(self._after, self._known())
                for event in self._open().events(after):
                    self._after = max(self._after, event.event_id)
                    self._backoff.reset()
                    self._on_event(event)
            except Exception:
                # The poller's banner says what is wrong; the stream only has to come back.
                pass
            finally:
                self._close()
            # A stream the server ended (it is stopping) is retried like a failed one; one that
            # stayed open a while was healthy, so its retry starts from the shortest delay.
            if time.monotonic() - opened > 10:
                self._backoff.reset()
            self._stopping.wait(self._backoff.next())

    def stop(self) -> None:
        """End :meth:`run` soon: closing the connection aborts the blocked read."""
        self._stopping.set()
        self._close()

    def _open(self) -> AdminSource:
        with self._lock:
            if self._stopping.is_set():
                raise RuntimeError("stopping")
            self._client = self._link.connect()
            return self._client

    def _close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
