"""A store's details: every health number of its last heartbeat, and its recent audit records."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, Static

from loyalnet.chain.v1 import chain_pb2
from loyalnet_cli.console.format import UNSET, age, clock_time, size, version_name, when
from loyalnet_cli.console.modals.dialog import dialog_css
from loyalnet_cli.console.snapshot import ChainSnapshot
from loyalnet_cli.console.views.audit import audit_row
from loyalnet_cli.console.views.stores import store_state
from loyalnet_cli.console.views.table import fill, new_table

STORE_RECORDS = 50


def concerns(record: chain_pb2.AuditRecord, store: str) -> bool:
    """Whether an audit record is by or about ``store``."""
    return record.actor == f"store:{store}" or record.subject == store


class StoreDetails(ModalScreen[None]):
    """Follows one store live; Escape closes."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "close")]
    DEFAULT_CSS = (
        dialog_css("StoreDetails")
        + """
    StoreDetails > .dialog { width: 100; }
    StoreDetails DataTable { height: auto; max-height: 12; }
    """
    )

    def __init__(self, name: str, snapshot: ChainSnapshot, now: datetime) -> None:
        super().__init__()
        self.store_name = name
        self._snapshot = snapshot
        self._now = now

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text(f"store {self.store_name}"), classes="dialog-title")
            yield Static(id="store-health")
            yield Static("recent audit records", classes="hint")
            yield new_table("id", "at", "actor", "action", "subject", "details")
            yield Static("Escape: close", classes="hint")

    def on_mount(self) -> None:
        self._redraw()

    def show_snapshot(self, snapshot: ChainSnapshot, now: datetime) -> None:
        self._snapshot, self._now = snapshot, now
        self._redraw()

    def action_close(self) -> None:
        self.dismiss(None)

    def _redraw(self) -> None:
        store = self._snapshot.store(self.store_name)
        health = self.query_one("#store-health", Static)
        if store is None:
            health.update(Text("This store is no longer registered.", style="bold red"))
        else:
            health.update(health_table(store, self._now))
        records = [r for r in self._snapshot.audit if concerns(r, self.store_name)]
        records.sort(key=lambda r: -r.id)
        fill(
            self.query_one(DataTable),
            [(str(r.id), audit_row(r, self._now)) for r in records[:STORE_RECORDS]],
        )


def health_table(store: chain_pb2.Store, now: datetime) -> Table:
    """Two columns of label and value, so 30 fields fit a short terminal."""
    health = store.health
    state, style = store_state(store)
    last_seen = when(store, "last_seen")
    registered = when(store, "registered_at")
    seen = "never" if last_seen is None else f"{age(last_seen, now)} ({clock_time(last_seen)})"
    fields: list[tuple[str, Text]] = [
        ("state", Text(state, style=style or "green")),
        ("last seen", Text(seen)),
        ("registered", Text(age(registered, now) if registered else UNSET)),
        ("commands waiting", Text(str(store.pending_commands))),
        ("model", Text(version_name(health.model_version))),
        ("model sha256", Text(health.model_sha256[:16] or UNSET)),
        ("members enrolled", Text(str(health.members_enrolled))),
        ("consent: recognition", Text(str(health.consents_recognition))),
        ("consent: improvement", Text(str(health.consents_model_improvement))),
        (
            "visits today",
            Text(
                f"{health.member_visits_today} members, {health.unknown_visits_today} unknown"
                if health.has_visits
                else "no cameras"
            ),
        ),
        ("store key", _check(health.key_ok, "FAIL")),
        ("gallery", _check(health.gallery_ok, "CHECK")),
        ("disk free", Text(size(health.disk_free_bytes))),
        ("receipts to send", Text(str(health.outbox_pending))),
        ("software", Text(health.software_version or UNSET)),
    ]
    table = Table.grid(padding=(0, 2))
    for _ in range(2):
        table.add_column(style="dim", no_wrap=True)
        table.add_column(no_wrap=True)
    half = (len(fields) + 1) // 2
    for left, right in zip(fields[:half], [*fields[half:], ("", Text(""))], strict=True):
        table.add_row(left[0], left[1], right[0], right[1])
    return table


def _check(good: bool, bad: str) -> Text:
    return Text("ok") if good else Text(bad, style="bold red")
