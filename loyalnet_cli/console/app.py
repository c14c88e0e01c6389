"""The console app: starts the poller and the event feed in workers and hands what they
bring to the screens. All network work happens in those workers, never on the UI thread."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual.app import App
from textual.screen import Screen

from loyalnet.chain.v1 import chain_pb2
from loyalnet_cli.console.acts import Acts
from loyalnet_cli.console.backoff import Backoff
from loyalnet_cli.console.event_feed import EventFeed
from loyalnet_cli.console.link import Clock, ConsoleLink, utc_now
from loyalnet_cli.console.live import ShowsSnapshot
from loyalnet_cli.console.main_screen import MainScreen
from loyalnet_cli.console.messages import EventArrived, LinkFailed, RunOnUi, SnapshotArrived
from loyalnet_cli.console.poller import LinkDown, Poller
from loyalnet_cli.console.snapshot import ChainSnapshot

NOTIFIED_EVENTS = frozenset(
    {
        "erasure-completed",
        "model-promoted",
        "model-rolled-back",
        "model-refused",
        "run-started",
        "run-finished",
        "store-registered",
        "store-revoked",
    }
)
"""Events worth a notification; every event shows in the ticker."""


@dataclass(frozen=True)
class ConsoleSettings:
    """How often the console asks, and how it backs off while the coordinator is away."""

    poll_seconds: float = 2.0
    first_retry_seconds: float = 1.0
    max_retry_seconds: float = 10.0


class ConsoleApp(App[None]):
    """The chain admins' console. Tests inject ``link`` (a canned client) and ``clock``."""

    TITLE = "loyalnet console"
    ENABLE_COMMAND_PALETTE = False

    def __init__(
        self,
        link: ConsoleLink,
        *,
        clock: Clock = utc_now,
        settings: ConsoleSettings | None = None,
    ) -> None:
        super().__init__()
        settings = settings or ConsoleSettings()
        self.link = link
        self.clock = clock
        self.snapshot: ChainSnapshot | None = None
        self.down: LinkDown | None = None
        self._poller = Poller(
            link,
            clock,
            lambda snapshot: self.post_message(SnapshotArrived(snapshot)),
            lambda down: self.post_message(LinkFailed(down)),
            settings.poll_seconds,
            Backoff(settings.first_retry_seconds, settings.max_retry_seconds),
        )
        self._feed = EventFeed(
            link,
            lambda event: self.post_message(EventArrived(event)),
            Backoff(settings.first_retry_seconds, settings.max_retry_seconds),
            known=self._newest_audit_id,
        )
        self.acts = Acts(self, link, lambda: self.snapshot, clock, self._poller.refresh_now)
        self._main = MainScreen(self.acts, link.address, clock)

    def get_default_screen(self) -> Screen[None]:
        return self._main

    def on_mount(self) -> None:
        self.run_worker(self._poller.run, name="poller", group="link", thread=True)
        self.run_worker(self._feed.run, name="events", group="link", thread=True)
        # Ages and the banner's countdown move on between polls.
        self.set_interval(1.0, self._show_link)

    def on_unmount(self) -> None:
        # Worker threads must end before the process can: closing their connections aborts
        # a call in flight instead of waiting out its timeout.
        self._poller.stop()
        self._feed.stop()

    def _newest_audit_id(self) -> int:
        """The newest audit record polled (0: none yet); read by the event feed's thread."""
        snapshot = self.snapshot
        return max((record.id for record in snapshot.audit), default=0) if snapshot else 0

    def action_refresh_now(self) -> None:
        """Fetch at once (F5), also cutting a retry's back-off short."""
        self._poller.refresh_now()

    def action_save_svg(self) -> None:
        """Save the screen as an SVG in the working folder (ctrl+s), e.g. for a report."""
        saved = self.save_screenshot(path=str(Path.cwd()))
        self.notify(f"screenshot saved: {saved}")

    # -- what the workers bring ------------------------------------------------------------

    def on_snapshot_arrived(self, message: SnapshotArrived) -> None:
        self.snapshot = message.snapshot
        self.down = None
        self._show()

    def on_link_failed(self, message: LinkFailed) -> None:
        self.down = message.down
        self._show()

    def on_event_arrived(self, message: EventArrived) -> None:
        event = message.event
        self._main.show_event(event)
        if event.kind in NOTIFIED_EVENTS:
            self.notify(_describe(event), title="chain event", markup=False)
        self._poller.refresh_now()

    def on_run_on_ui(self, message: RunOnUi) -> None:
        message.callback()

    def _show(self) -> None:
        now = self.clock()
        if self.snapshot is not None:
            for screen in self.screen_stack:
                if isinstance(screen, ShowsSnapshot):
                    screen.show_snapshot(self.snapshot, now)
        self._show_link()

    def _show_link(self) -> None:
        self._main.show_link(self.down, self.clock())


def _describe(event: chain_pb2.ChainEvent) -> str:
    return f"{event.kind} {event.subject}".strip()
