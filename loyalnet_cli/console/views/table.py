"""Refreshing a ``DataTable`` every few seconds without losing the admin's place in it."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import DataTable

Row = tuple[str, Sequence[Text]]
"""A row's key (stable across refreshes: a store name, a version) and its cells."""


def new_table(*columns: str) -> DataTable[Text]:
    """A row-cursor table with these column labels."""
    table: DataTable[Text] = DataTable(cursor_type="row", zebra_stripes=True)
    for label in columns:
        table.add_column(label, key=label)
    return table


def fill(table: DataTable[Text], rows: Sequence[Row]) -> None:
    """Show ``rows``, keeping the cursor on the row with the same key where it still exists.

    Unchanged rows are not redrawn: refreshes that bring nothing new cost nothing on screen.
    """
    new_keys = [key for key, _ in rows]
    old_keys = [str(row.value) for row in table.rows]
    if new_keys == old_keys:
        for key, cells in rows:
            for column, cell in zip(table.columns, cells, strict=True):
                if table.get_cell(key, column) != cell:
                    table.update_cell(key, column, cell, update_width=True)
        return
    selected = selected_key(table)
    table.clear()
    for key, cells in rows:
        table.add_row(*cells, key=key)
    if selected in new_keys:
        table.move_cursor(row=new_keys.index(selected), animate=False)


def selected_key(table: DataTable[Text]) -> str | None:
    """The key of the row under the cursor, None in an empty table."""
    if not table.row_count:
        return None
    row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
    return None if row_key.value is None else str(row_key.value)


def set_columns(table: DataTable[Text], columns: Sequence[str]) -> None:
    """Replace every column (and so every row) when the set of columns changes."""
    if [str(key.value) for key in table.columns] == list(columns):
        return
    table.clear(columns=True)
    for label in columns:
        table.add_column(label, key=label)
