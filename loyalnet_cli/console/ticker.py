"""A one-line ticker of the newest chain events, above the key bar."""

from __future__ import annotations

from collections import deque

from rich.text import Text
from textual.widgets import Static

from loyalnet.chain.v1 import chain_pb2
from loyalnet_cli.console.format import clock_time, when

KEPT_EVENTS = 6


class EventTicker(Static):
    """Newest event first: time, kind and subject; older ones fall off the right edge."""

    DEFAULT_CSS = """
    EventTicker {
        height: 1;
        padding: 0 1;
        background: $panel;
        color: $text-muted;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def __init__(self) -> None:
        super().__init__()
        self._events: deque[chain_pb2.ChainEvent] = deque(maxlen=KEPT_EVENTS)

    def on_mount(self) -> None:
        self.update(Text("events: waiting for the chain's next event", style="italic"))

    @property
    def events(self) -> tuple[chain_pb2.ChainEvent, ...]:
        """The events shown, newest first."""
        return tuple(self._events)

    def add(self, event: chain_pb2.ChainEvent) -> None:
        self._events.appendleft(event)
        text = Text("events: ")
        for index, shown in enumerate(self._events):
            if index:
                text.append(" · ", style="dim")
            at = when(shown, "at")
            if at is not None:
                text.append(clock_time(at)[:8] + " ", style="dim")
            text.append(shown.kind, style="bold" if index == 0 else "")
            if shown.subject:
                text.append(f" {shown.subject}")
        self.update(text)
