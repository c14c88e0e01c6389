"""The console's main screen: status line, banner, the five views, event ticker, key bar."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, TabbedContent, TabPane

from loyalnet.chain.v1 import chain_pb2
from loyalnet_cli.console.acts import Acts
from loyalnet_cli.console.banner import LinkBanner
from loyalnet_cli.console.link import Clock
from loyalnet_cli.console.modals.store_details import StoreDetails
from loyalnet_cli.console.poller import LinkDown
from loyalnet_cli.console.snapshot import ChainSnapshot
from loyalnet_cli.console.status_bar import StatusBar
from loyalnet_cli.console.ticker import EventTicker
from loyalnet_cli.console.views.audit import AuditView
from loyalnet_cli.console.views.erasures import ErasuresView
from loyalnet_cli.console.views.models import ModelsView
from loyalnet_cli.console.views.stores import StoresView
from loyalnet_cli.console.views.training import TrainingView

VIEWS = ("stores", "training", "models", "erasures", "audit")
ACTS = frozenset({"erase", "promote", "rollback", "train"})
"""Actions that change the chain: hidden from viewers."""
MODEL_ACTS = frozenset({"promote", "rollback"})
"""Actions about model versions: offered on the Models view, where the version is chosen."""


class MainScreen(Screen[None]):
    """Lays the views out and maps keys to acts; the app feeds it data."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("e", "erase", "erase"),
        Binding("p", "promote", "promote"),
        Binding("r", "rollback", "roll back"),
        Binding("t", "train", "train"),
        Binding("slash", "filter", "filter"),
        Binding("tab", "next_view(1)", "views", key_display="tab"),
        Binding("shift+tab", "next_view(-1)", "previous view", show=False),
        *(Binding(str(n), f"view('{v}')", v, show=False) for n, v in enumerate(VIEWS, 1)),
        Binding("f5", "app.refresh_now", "refresh", show=False),
        Binding("ctrl+s", "app.save_svg", "screenshot", show=False),
        Binding("q", "app.quit", "quit"),
    ]
    DEFAULT_CSS = """
    MainScreen TabbedContent { height: 1fr; }
    MainScreen TabPane { padding: 0; }
    MainScreen TabbedContent.-stale ContentSwitcher { opacity: 55%; }
    MainScreen .summary { height: auto; padding: 0 1; color: $text-muted; }
    MainScreen DataTable { height: 1fr; }
    """

    def __init__(self, acts: Acts, address: str, clock: Clock) -> None:
        super().__init__()
        self._acts = acts
        self._address = address
        self._clock = clock
        self._snapshot: ChainSnapshot | None = None
        self._shown_read_only = False
        self._ready = False
        self._down: LinkDown | None = None
        self._filter_next = False
        self._early_events: list[chain_pb2.ChainEvent] = []

    def compose(self) -> ComposeResult:
        yield StatusBar()
        yield LinkBanner()
        with TabbedContent(initial="stores"):
            yield TabPane("1 Stores", StoresView(), id="stores")
            yield TabPane("2 Training", TrainingView(), id="training")
            yield TabPane("3 Models", ModelsView(), id="models")
            yield TabPane("4 Erasures", ErasuresView(), id="erasures")
            yield TabPane("5 Audit", AuditView(), id="audit")
        yield EventTicker()
        yield Footer()

    def on_mount(self) -> None:
        # The first poll may answer before the views exist; what came is shown now.
        self._ready = True
        if self._snapshot is not None:
            self.show_snapshot(self._snapshot, self._clock())
        self.show_link(self._down, self._clock())
        for event in self._early_events:
            self.show_event(event)
        self._early_events.clear()
        self._focus_view()

    # -- data ------------------------------------------------------------------------------

    def show_snapshot(self, snapshot: ChainSnapshot, now: datetime) -> None:
        self._snapshot = snapshot
        if not self._ready:
            return
        self.query_one(StoresView).show(snapshot, now)
        self.query_one(TrainingView).show(snapshot, now)
        self.query_one(ModelsView).show(snapshot, now)
        self.query_one(ErasuresView).show(snapshot, now)
        self.query_one(AuditView).show(snapshot, now)
        if snapshot.read_only != self._shown_read_only:
            self._shown_read_only = snapshot.read_only
            self.refresh_bindings()

    def show_link(self, down: LinkDown | None, now: datetime) -> None:
        """The banner and the greying of stale data; called on every tick and poll."""
        self._down = down
        if not self._ready:
            return
        data_at = None if self._snapshot is None else self._snapshot.fetched_at
        self.query_one(LinkBanner).show_state(down, data_at, now)
        self.query_one(TabbedContent).set_class(down is not None, "-stale")
        self.query_one(StatusBar).show_state(self._address, self._snapshot)

    def show_event(self, event: chain_pb2.ChainEvent) -> None:
        if not self._ready:
            self._early_events.append(event)
            return
        self.query_one(EventTicker).add(event)

    # -- keys ------------------------------------------------------------------------------

    @property
    def active_view(self) -> str:
        return self.query_one(TabbedContent).active

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ACTS and self._snapshot is not None and self._snapshot.read_only:
            return False
        if action in MODEL_ACTS and self.active_view != "models":
            return None
        return True

    def action_erase(self) -> None:
        self._acts.erase()

    def action_promote(self) -> None:
        self._acts.promote(self.query_one(ModelsView).selected_version())

    def action_rollback(self) -> None:
        self._acts.rollback()

    def action_train(self) -> None:
        self._acts.train()

    def action_filter(self) -> None:
        tabs = self.query_one(TabbedContent)
        if tabs.active == "audit":
            self.query_one(AuditView).focus_filter()
            return
        self._filter_next = True
        tabs.active = "audit"

    def action_view(self, view: str) -> None:
        self.query_one(TabbedContent).active = view

    def action_next_view(self, step: int) -> None:
        index = VIEWS.index(self.active_view)
        self.query_one(TabbedContent).active = VIEWS[(index + step) % len(VIEWS)]

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        # Focus follows the view, except to the filter when `/` brought the Audit view up.
        if self._filter_next and self.active_view == "audit":
            self.query_one(AuditView).focus_filter()
        else:
            self._focus_view()
        self._filter_next = False
        self.refresh_bindings()

    def on_stores_view_chosen(self, event: StoresView.Chosen) -> None:
        if self._snapshot is not None:
            self.app.push_screen(StoreDetails(event.name, self._snapshot, self._clock()))

    def _focus_view(self) -> None:
        pane = self.query_one(TabbedContent).active_pane
        if pane is not None:
            pane.query(DataTable).first().focus()
