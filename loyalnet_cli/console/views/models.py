"""Models: every version, whether its signature verified, its metrics, which stores run it."""

from __future__ import annotations

from datetime import datetime

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from loyalnet.chain.v1 import chain_pb2
from loyalnet_cli.console.format import age, metrics_line, version_name, when
from loyalnet_cli.console.snapshot import ChainSnapshot
from loyalnet_cli.console.views.table import fill, new_table, selected_key

PRETRAINED_KEY = "0"
NAMED_STORES = 6


class ModelsView(Vertical):
    """Newest version first, the pretrained model last; ``p`` acts on the selected row, whose
    stores are named below the table."""

    def __init__(self) -> None:
        super().__init__()
        self._snapshot: ChainSnapshot | None = None

    def compose(self) -> ComposeResult:
        yield new_table(
            "version", "promoted", "signature", "stores", "created", "metrics", "sha256"
        )
        yield Static(id="models-selected", classes="summary")
        yield Static(id="models-summary", classes="summary")

    def show(self, snapshot: ChainSnapshot, now: datetime) -> None:
        self._snapshot = snapshot
        promoted = snapshot.models.promoted_version
        rows = [
            (str(m.version), _row(m, promoted, now))
            for m in sorted(snapshot.models.models, key=lambda m: -m.version)
        ]
        rows.append((PRETRAINED_KEY, _pretrained_row(promoted, len(_running(snapshot, 0)))))
        fill(self.query_one(DataTable), rows)
        summary = Text("stores are told to run ")
        summary.append(version_name(promoted), style="bold")
        summary.append(" · p: promote the selected version · r: roll back", style="dim")
        self.query_one("#models-summary", Static).update(summary)
        self._show_selected()

    def selected_version(self) -> int | None:
        """The version under the cursor (0: the pretrained model), None in an empty table."""
        key = selected_key(self.query_one(DataTable))
        return None if key is None else int(key)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_selected()

    def _show_selected(self) -> None:
        version = self.selected_version()
        if self._snapshot is None or version is None:
            return
        names = _running(self._snapshot, version)
        text = Text(f"{version_name(version)} runs in ", style="")
        if names:
            text.append(", ".join(names[:NAMED_STORES]), style="bold")
            text.append(
                f" and {len(names) - NAMED_STORES} more" if len(names) > NAMED_STORES else ""
            )
        else:
            text.append("no store")
        self.query_one("#models-selected", Static).update(text)


def _running(snapshot: ChainSnapshot, version: int) -> list[str]:
    """The stores whose last heartbeat says they recognise with ``version``."""
    if version:
        model = next((m for m in snapshot.models.models if m.version == version), None)
        return sorted(model.stores_running) if model else []
    # ListModels has no entry for the pretrained model; the heartbeats tell.
    return sorted(
        s.name
        for s in snapshot.stores
        if not s.revoked and s.HasField("last_seen") and s.health.model_version == 0
    )


def _promoted_cell(is_promoted: bool) -> Text:
    return Text("yes", style="bold green") if is_promoted else Text("")


def _row(model: chain_pb2.ModelVersion, promoted: int, now: datetime) -> list[Text]:
    is_promoted = model.version == promoted
    return [
        Text(version_name(model.version), style="bold" if is_promoted else ""),
        _promoted_cell(is_promoted),
        Text("verified", style="green")
        if model.signature_verified
        else Text("NOT SIGNED", style="bold red"),
        Text(str(len(model.stores_running)), justify="right"),
        Text(age(when(model, "created_at"), now)),
        Text(metrics_line(model.metrics, limit=2)),
        Text(model.sha256[:12], style="dim"),
    ]


def _pretrained_row(promoted: int, running: int) -> list[Text]:
    return [
        Text("pretrained", style="bold" if promoted == 0 else ""),
        _promoted_cell(promoted == 0),
        Text("built in", style="dim"),
        Text(str(running), justify="right"),
        Text(""),
        Text(""),
        Text(""),
    ]
