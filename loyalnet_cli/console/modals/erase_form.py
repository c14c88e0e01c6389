"""The erasure form: the member id typed twice, since an erasure cannot be undone."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from loyalnet.member_ids import member_id_problem
from loyalnet_cli.console.modals.dialog import dialog_css


def erase_problem(member_id: str, again: str) -> str | None:
    """Why the two entries cannot be sent (a sentence to show), or None when they can."""
    if not member_id:
        return "Type the member id."
    if member_id != again:
        return "The two entries differ; type the same member id twice."
    return member_id_problem(member_id)


class EraseForm(ModalScreen[str | None]):
    """Dismissed with the member id, or None when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel")]
    DEFAULT_CSS = dialog_css("EraseForm")

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Erase a member in every store", classes="dialog-title")
            yield Static(
                "Every store deletes the member's templates and consents and answers with a "
                "signed receipt. This cannot be undone."
            )
            yield Input(placeholder="member id", id="member", compact=True)
            yield Input(placeholder="the same member id again", id="again", compact=True)
            yield Static(id="problem", classes="problem")
            with Horizontal(classes="buttons"):
                yield Button("Erase", variant="error", id="erase")
                yield Button("Cancel", id="cancel")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "member":
            self.query_one("#again", Input).focus()
        else:
            self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "erase":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def _submit(self) -> None:
        member_id = self.query_one("#member", Input).value
        problem = erase_problem(member_id, self.query_one("#again", Input).value)
        if problem is not None:
            # The problem quotes the id; as Text a "[" in it shows as typed, not as markup.
            self.query_one("#problem", Static).update(Text(problem))
            return
        self.dismiss(member_id)
