"""Erasures: every request, and for the selected one each store's answer and receipt."""

from __future__ import annotations

from datetime import datetime

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from loyalnet.chain.v1 import chain_pb2
from loyalnet_cli.console.format import age, short_id, when
from loyalnet_cli.console.snapshot import ChainSnapshot
from loyalnet_cli.console.views.table import fill, new_table, selected_key

STATE_STYLES = {"pending": "yellow", "erased": "green", "refused": "bold red"}


class ErasuresView(Vertical):
    """Requests newest first on top; the selected request's stores below."""

    DEFAULT_CSS = """
    ErasuresView #erasure-requests { height: 1fr; }
    ErasuresView #erasure-stores { height: 1fr; }
    """

    def __init__(self) -> None:
        super().__init__()
        self._snapshot: ChainSnapshot | None = None
        self._now: datetime | None = None

    def compose(self) -> ComposeResult:
        requests = new_table("request", "member", "requested", "by", "answered", "state")
        requests.id = "erasure-requests"
        yield requests
        yield Static(id="erasure-heading", classes="summary")
        stores = new_table("store", "state", "receipt", "answered")
        stores.id = "erasure-stores"
        stores.can_focus = False
        yield stores

    def show(self, snapshot: ChainSnapshot, now: datetime) -> None:
        self._snapshot, self._now = snapshot, now
        newest_first = sorted(snapshot.erasures, key=_requested_at, reverse=True)
        fill(
            self.query_one("#erasure-requests", DataTable),
            [(e.request_id, request_row(e, now)) for e in newest_first],
        )
        self._show_selected()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "erasure-requests":
            self._show_selected()

    def _show_selected(self) -> None:
        if self._snapshot is None or self._now is None:
            return
        key = selected_key(self.query_one("#erasure-requests", DataTable))
        erasure = None if key is None else self._snapshot.erasure(key)
        heading = self.query_one("#erasure-heading", Static)
        stores = self.query_one("#erasure-stores", DataTable)
        if erasure is None:
            heading.update(Text("No erasure requests. e asks for one.", style="italic"))
            fill(stores, [])
            return
        text = Text(f"request {erasure.request_id} · member ")
        text.append(erasure.member_id, style="bold")
        text.append(f" · {progress(erasure)}")
        heading.update(text)
        fill(stores, [(s.store, store_row(s, self._now)) for s in erasure.stores])


def progress(erasure: chain_pb2.Erasure) -> str:
    """``2 of 3 stores answered``, or ``complete: 3 verified receipts``."""
    if erasure.complete:
        return f"complete: {len(erasure.stores)} verified receipts"
    answered = sum(1 for s in erasure.stores if s.state != "pending")
    return f"{answered} of {len(erasure.stores)} stores answered"


def request_row(erasure: chain_pb2.Erasure, now: datetime) -> list[Text]:
    answered = sum(1 for s in erasure.stores if s.state != "pending")
    refused = any(s.state == "refused" for s in erasure.stores)
    state = "complete" if erasure.complete else "refused" if refused else "pending"
    return [
        Text(short_id(erasure.request_id)),
        Text(erasure.member_id),
        Text(age(when(erasure, "requested_at"), now)),
        Text(erasure.requested_by),
        Text(f"{answered}/{len(erasure.stores)}", justify="right"),
        Text(state, style={"complete": "green", "refused": "bold red"}.get(state, "yellow")),
    ]


def store_row(answer: chain_pb2.StoreErasure, now: datetime) -> list[Text]:
    answered = when(answer, "answered_at")
    if answer.state == "pending":
        receipt = Text("waiting", style="dim")
    elif answer.receipt_verified:
        receipt = Text("verified", style="green")
    else:
        receipt = Text("NOT VERIFIED", style="bold red")
    return [
        Text(answer.store),
        Text(answer.state, style=STATE_STYLES.get(answer.state, "")),
        receipt,
        Text(age(answered, now) if answered else ""),
    ]


def _requested_at(erasure: chain_pb2.Erasure) -> tuple[float, str]:
    at = when(erasure, "requested_at")
    return (at.timestamp() if at else 0.0, erasure.request_id)
