"""What the worker threads tell the UI thread (``post_message`` is safe from any thread)."""

from __future__ import annotations

from collections.abc import Callable

from textual.message import Message

from loyalnet.chain.v1 import chain_pb2
from loyalnet_cli.console.poller import LinkDown
from loyalnet_cli.console.snapshot import ChainSnapshot


class SnapshotArrived(Message):
    """The poller fetched fresh data."""

    def __init__(self, snapshot: ChainSnapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class LinkFailed(Message):
    """The poller could not fetch; the last data stays, greyed out."""

    def __init__(self, down: LinkDown) -> None:
        super().__init__()
        self.down = down


class EventArrived(Message):
    """A chain event from the live stream."""

    def __init__(self, event: chain_pb2.ChainEvent) -> None:
        super().__init__()
        self.event = event


class RunOnUi(Message):
    """A worker's result, to be handled on the UI thread (posting never blocks the worker,
    even while the app is shutting down)."""

    def __init__(self, callback: Callable[[], None]) -> None:
        super().__init__()
        self.callback = callback
