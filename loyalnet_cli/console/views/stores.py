"""Stores: is each one up, which model it recognises with, its members, consents and health."""

from __future__ import annotations

from datetime import datetime

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Static

from loyalnet.chain.v1 import chain_pb2
from loyalnet_cli.console.format import UNSET, age, size, version_name, when
from loyalnet_cli.console.snapshot import ChainSnapshot
from loyalnet_cli.console.views.table import fill, new_table, set_columns

LOW_DISK_BYTES = 2 * 1024**3
"""Below this a store cannot take a new model version and a gallery backup at once."""
WIDE_FROM = 116
"""Terminal columns from which every health number has a column of its own."""
WIDE_COLUMNS = (
    "store",
    "state",
    "last seen",
    "model",
    "members",
    "consent r/i",
    "visits m/u",
    "key",
    "gallery",
    "disk free",
    "cmds",
)
NARROW_COLUMNS = ("store", "state", "model", "members", "consent r/i", "health", "cmds")
"""A narrower terminal: last seen joins the state, key, gallery and disk become one health
word, visits today wait in the store's details (Enter).

consent r/i: members consenting to recognition / to model improvement; visits m/u: members
and unknown faces counted today; cmds: commands waiting for the store."""


class StoresView(Vertical):
    """One row per store; offline and revoked stores in red, Enter opens a store's details."""

    class Chosen(Message):
        """The admin pressed Enter on a store."""

        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

    def __init__(self) -> None:
        super().__init__()
        self._shown: tuple[ChainSnapshot, datetime] | None = None

    def compose(self) -> ComposeResult:
        yield new_table()
        yield Static(id="stores-summary", classes="summary")

    def on_resize(self, event: events.Resize) -> None:
        if self._shown is not None:
            self.show(*self._shown)

    def show(self, snapshot: ChainSnapshot, now: datetime) -> None:
        self._shown = (snapshot, now)
        table = self.query_one(DataTable)
        wide = self.app.size.width >= WIDE_FROM
        set_columns(table, WIDE_COLUMNS if wide else NARROW_COLUMNS)
        cells = _wide_cells if wide else _narrow_cells
        fill(table, [(store.name, cells(store, now)) for store in snapshot.stores])
        online = sum(1 for s in snapshot.stores if s.online and not s.revoked)
        revoked = sum(1 for s in snapshot.stores if s.revoked)
        offline = len(snapshot.stores) - online - revoked
        summary = Text(f"{len(snapshot.stores)} stores: {online} online")
        summary.append(f", {offline} offline", style="bold red" if offline else "")
        summary.append(f", {revoked} revoked" if revoked else "")
        summary.append(" · enter: a store's details", style="dim")
        self.query_one("#stores-summary", Static).update(summary)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(self.Chosen(str(event.row_key.value)))


def store_state(store: chain_pb2.Store) -> tuple[str, str]:
    """The store's state word and the style its row gets."""
    if store.revoked:
        return "revoked", "red strike"
    if store.online:
        return "online", ""
    return "offline", "bold red"


def health_problems(store: chain_pb2.Store) -> list[str]:
    """What is wrong in the store's last heartbeat, in a word each (empty: all is well)."""
    health = store.health
    problems = [] if health.key_ok else ["key"]
    problems += [] if health.gallery_ok else ["gallery"]
    problems += [] if health.disk_free_bytes >= LOW_DISK_BYTES else ["disk"]
    return problems


def _wide_cells(store: chain_pb2.Store, now: datetime) -> list[Text]:
    state, style = store_state(store)
    last_seen = when(store, "last_seen")
    health = store.health
    if last_seen is None:
        # Never heard from: its health numbers are zeros, not measurements.
        values = [store.name, state, "never", *[UNSET] * 7, str(store.pending_commands)]
        return [Text(v, style=style) for v in values]
    visits = (
        f"{health.member_visits_today}/{health.unknown_visits_today}"
        if health.has_visits
        else "no cameras"
    )
    return [
        Text(store.name, style=style),
        Text(state, style=style or "green"),
        Text(age(last_seen, now), style=style),
        Text(version_name(health.model_version), style=style),
        Text(str(health.members_enrolled), style=style, justify="right"),
        Text(
            f"{health.consents_recognition}/{health.consents_model_improvement}",
            style=style,
            justify="right",
        ),
        Text(visits, style=style, justify="right"),
        _check(health.key_ok, "ok", "FAIL", style),
        _check(health.gallery_ok, "ok", "CHECK", style),
        Text(
            size(health.disk_free_bytes),
            style=style or ("bold red" if health.disk_free_bytes < LOW_DISK_BYTES else ""),
            justify="right",
        ),
        _commands(store, style),
    ]


def _narrow_cells(store: chain_pb2.Store, now: datetime) -> list[Text]:
    state, style = store_state(store)
    last_seen = when(store, "last_seen")
    health = store.health
    if last_seen is None:
        values = [store.name, "never seen", UNSET, UNSET, UNSET, UNSET]
        return [*(Text(v, style=style) for v in values), _commands(store, style)]
    if state != "online":
        state = f"{state} {age(last_seen, now).removesuffix(' ago')}"
    problems = health_problems(store)
    return [
        Text(store.name, style=style),
        Text(state, style=style or "green"),
        Text(version_name(health.model_version), style=style),
        Text(str(health.members_enrolled), style=style, justify="right"),
        Text(
            f"{health.consents_recognition}/{health.consents_model_improvement}",
            style=style,
            justify="right",
        ),
        Text(" ".join(problems) or "ok", style=style or ("bold red" if problems else "green")),
        _commands(store, style),
    ]


def _commands(store: chain_pb2.Store, style: str) -> Text:
    return Text(
        str(store.pending_commands),
        style=style or ("yellow" if store.pending_commands else ""),
        justify="right",
    )


def _check(good: bool, yes: str, no: str, style: str) -> Text:
    return Text(yes if good else no, style=style or ("green" if good else "bold red"))
