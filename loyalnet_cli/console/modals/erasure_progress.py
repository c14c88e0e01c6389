"""One erasure request followed live, store by store, until every store has answered."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, Static

from loyalnet.chain.v1 import chain_pb2
from loyalnet_cli.console.modals.dialog import dialog_css
from loyalnet_cli.console.snapshot import ChainSnapshot
from loyalnet_cli.console.views.erasures import progress, store_row
from loyalnet_cli.console.views.table import fill, new_table


class ErasureProgress(ModalScreen[None]):
    """Shows the request as the coordinator last reported it; Escape or Enter closes."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,enter", "close", "close")]
    DEFAULT_CSS = (
        dialog_css("ErasureProgress")
        + """
    ErasureProgress DataTable { height: auto; max-height: 12; }
    ErasureProgress #erasure-state.-complete { color: $success; text-style: bold; }
    """
    )

    def __init__(self, erasure: chain_pb2.Erasure, now: datetime) -> None:
        super().__init__()
        self.request_id = erasure.request_id
        self.erasure = erasure
        self._now = now

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            title = Text("Erasure of member ")
            title.append(self.erasure.member_id)
            yield Label(title, classes="dialog-title")
            yield Static(Text(f"request {self.request_id}"), classes="hint")
            table = new_table("store", "state", "receipt", "answered")
            table.can_focus = False
            yield table
            yield Static(id="erasure-state")
            yield Static("Escape: close (the Erasures view keeps following it)", classes="hint")

    def on_mount(self) -> None:
        self._redraw()

    def show_snapshot(self, snapshot: ChainSnapshot, now: datetime) -> None:
        self.erasure = snapshot.erasure(self.request_id) or self.erasure
        self._now = now
        self._redraw()

    def _redraw(self) -> None:
        erasure = self.erasure
        fill(
            self.query_one(DataTable), [(s.store, store_row(s, self._now)) for s in erasure.stores]
        )
        state = self.query_one("#erasure-state", Static)
        state.set_class(erasure.complete, "-complete")
        text = progress(erasure)
        if not erasure.complete:
            text += " · stores that are offline answer when they come back"
        state.update(Text(text))

    def action_close(self) -> None:
        self.dismiss(None)
