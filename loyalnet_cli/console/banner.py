"""The banner across the top while the coordinator cannot be reached."""

from __future__ import annotations

from datetime import datetime

from rich.text import Text
from textual.widgets import Static

from loyalnet_cli.console.format import age, clock_time
from loyalnet_cli.console.poller import LinkDown


class LinkBanner(Static):
    """Says since when the coordinator is unreachable, when it is tried again, and how old
    the data below is; hidden while the coordinator answers."""

    DEFAULT_CSS = """
    LinkBanner {
        display: none;
        height: auto;
        padding: 0 1;
        background: $error;
        color: $text;
        text-style: bold;
    }
    LinkBanner.-shown {
        display: block;
    }
    """

    def show_state(self, down: LinkDown | None, data_at: datetime | None, now: datetime) -> None:
        self.set_class(down is not None, "-shown")
        if down is None:
            return
        what = "unreachable" if down.unreachable else "refusing"
        text = Text(f"coordinator {what} at {down.address} since {clock_time(down.since)}")
        wait = max(0, int((down.retry_at - now).total_seconds() + 0.999))
        text.append(f" — retrying in {wait}s" if wait else " — retrying")
        if data_at is None:
            text.append(" · no data yet")
        else:
            text.append(f" · data below from {clock_time(data_at)} ({age(data_at, now)})")
        if not down.unreachable:
            text.append(f"\n{down.message}", style="not bold")
        self.update(text)
