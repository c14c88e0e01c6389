"""The training form: how many federated rounds the new run should have."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from loyalnet_cli.console.modals.dialog import dialog_css

MAX_ROUNDS = 1000


def rounds_problem(text: str) -> str | None:
    """Why ``text`` is no number of rounds, or None (empty means the coordinator's default)."""
    if not text.strip():
        return None
    if not text.strip().isdigit() or int(text) > MAX_ROUNDS:
        return f"Rounds are a whole number from 1 to {MAX_ROUNDS}, or empty for the default."
    return None


class TrainForm(ModalScreen[int | None]):
    """Dismissed with the rounds (0: the coordinator's default), or None when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel")]
    DEFAULT_CSS = dialog_css("TrainForm")

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Start a federated training run", classes="dialog-title")
            yield Static("The connected stores train on their consenting members' templates.")
            yield Input(
                placeholder="rounds (empty: the coordinator's default)",
                id="rounds",
                type="integer",
                compact=True,
            )
            yield Static(id="problem", classes="problem")
            with Horizontal(classes="buttons"):
                yield Button("Train", variant="warning", id="train")
                yield Button("Cancel", id="cancel")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "train":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def _submit(self) -> None:
        text = self.query_one(Input).value
        problem = rounds_problem(text)
        if problem is not None:
            self.query_one("#problem", Static).update(Text(problem))
            return
        self.dismiss(int(text) if text.strip() else 0)
