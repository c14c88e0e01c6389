"""The top line: which chain, who you are to it, where the coordinator is, how fresh the data."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from loyalnet_cli.console.format import clock_time
from loyalnet_cli.console.snapshot import ChainSnapshot


class StatusBar(Static):
    DEFAULT_CSS = """
    StatusBar {
        height: 1;
        padding: 0 1;
        background: $primary-background;
        color: $text;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def show_state(self, address: str, snapshot: ChainSnapshot | None) -> None:
        text = Text("loyalnet", style="bold")
        if snapshot is None:
            text.append(f" · connecting to {address}…")
            self.update(text)
            return
        me = snapshot.me
        text.append(f" · {me.chain} · {me.name} ({me.role})")
        if snapshot.read_only:
            text.append(" read only", style="bold reverse")
        # The address comes last: cut off first on a narrow terminal, and the banner names it
        # whenever it matters.
        text.append(f" · as of {clock_time(snapshot.fetched_at)} · {address}")
        self.update(text)
