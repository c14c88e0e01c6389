"""A yes/no question before an act that changes stores (promotion, rollback)."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from loyalnet_cli.console.modals.dialog import dialog_css


class ConfirmScreen(ModalScreen[bool]):
    """Dismissed with True on ``y`` or the act's button; Cancel, ``n`` or Escape: False.

    The cancel button has the focus, so an Enter pressed by habit changes nothing.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "yes"),
        Binding("n,escape", "answer(False)", "no"),
    ]
    DEFAULT_CSS = dialog_css("ConfirmScreen")

    def __init__(self, title: str, body: Text, act: str) -> None:
        super().__init__()
        self._title = title
        self._body = body
        self._act = act

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text(self._title), classes="dialog-title")
            yield Static(self._body, id="confirm-body")
            yield Static(Text(f"y: {self._act.lower()} · n or Escape: cancel"), classes="hint")
            with Horizontal(classes="buttons"):
                yield Button(self._act, variant="warning", id="yes")
                yield Button("Cancel", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
