"""The look every console dialog shares: a bordered box in the middle of a dimmed screen."""

from __future__ import annotations

DIALOG_CSS = """
{screen} {
    align: center middle;
}
{screen} > .dialog {
    width: 72;
    max-width: 100%;
    height: auto;
    max-height: 100%;
    overflow-y: auto;
    border: thick $primary;
    background: $surface;
    padding: 0 1;
}
{screen} .dialog-title {
    text-style: bold;
    width: 100%;
    margin-bottom: 1;
}
{screen} .problem {
    color: $error;
    height: auto;
}
{screen} .buttons {
    height: auto;
    align-horizontal: right;
    margin-top: 1;
}
{screen} .buttons Button {
    margin-left: 2;
}
{screen} .hint {
    color: $text-muted;
}
"""


def dialog_css(screen: str) -> str:
    """The shared dialog rules, scoped to one screen class (CSS is global in Textual)."""
    return DIALOG_CSS.replace("{screen}", screen)
