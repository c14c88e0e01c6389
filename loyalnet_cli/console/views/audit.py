"""Audit: the coordinator's log, newest first, narrowed by a filter on action, actor, subject."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import DataTable, Input

from loyalnet.chain.v1 import chain_pb2
from loyalnet_cli.console.format import age, when
from loyalnet_cli.console.snapshot import ChainSnapshot
from loyalnet_cli.console.views.table import fill, new_table

DETAILS_CHARS = 60


def matches(record: chain_pb2.AuditRecord, needle: str) -> bool:
    """Whether ``needle`` (any case) is in the record's action, actor or subject."""
    needle = needle.strip().lower()
    return not needle or any(
        needle in field.lower() for field in (record.action, record.actor, record.subject)
    )


def audit_row(record: chain_pb2.AuditRecord, now: datetime) -> list[Text]:
    details = record.details_json
    if len(details) > DETAILS_CHARS:
        details = details[: DETAILS_CHARS - 1] + "…"
    return [
        Text(str(record.id), justify="right"),
        Text(age(when(record, "at"), now)),
        Text(record.actor),
        Text(record.action, style="bold"),
        Text(record.subject),
        Text(details, style="dim"),
    ]


class AuditView(Vertical):
    """``/`` focuses the filter; Escape or Enter goes back to the table."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "leave_filter", "back to the table", show=False)
    ]
    DEFAULT_CSS = """
    AuditView Input { margin: 0 1; }
    """

    def __init__(self) -> None:
        super().__init__()
        self._snapshot: ChainSnapshot | None = None
        self._now: datetime | None = None

    def compose(self) -> ComposeResult:
        yield Input(
            placeholder="/ filter by action, actor or subject", id="audit-filter", compact=True
        )
        yield new_table("id", "at", "actor", "action", "subject", "details")

    def show(self, snapshot: ChainSnapshot, now: datetime) -> None:
        self._snapshot, self._now = snapshot, now
        self._fill()

    def focus_filter(self) -> None:
        self.query_one(Input).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self._fill()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_one(DataTable).focus()

    def action_leave_filter(self) -> None:
        self.query_one(DataTable).focus()

    def _fill(self) -> None:
        if self._snapshot is None or self._now is None:
            return
        needle = self.query_one(Input).value
        now = self._now
        shown = sorted((r for r in self._snapshot.audit if matches(r, needle)), key=lambda r: -r.id)
        fill(self.query_one(DataTable), [(str(r.id), audit_row(r, now)) for r in shown])
