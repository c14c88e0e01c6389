"""The console's views as pictures: canned coordinator data, a fixed clock, SVG snapshots.

The data below is a small chain at 14:02:07 UTC: five stores (one offline, one revoked, one
never seen), three training runs (one running), three model versions (one unsigned), two
erasures (one waiting for an offline store, its member id holding rich markup characters) and
an audit log. Regenerate after a deliberate change with
``pytest tests/test_console_snapshots.py --snapshot-update`` and look at the SVGs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from textual.pilot import Pilot
from textual.widgets import Input

from coordinator.admin_client import AdminError
from loyalnet.chain.v1 import chain_pb2
from loyalnet_cli.console import ConsoleApp, ConsoleLink, ConsoleSettings
from loyalnet_cli.console.banner import LinkBanner
from loyalnet_cli.console.main_screen import MainScreen
from loyalnet_cli.console.ticker import EventTicker

NOW = datetime(2025, 6, 2, 14, 2, 7, tzinfo=UTC)
GIB = 1024**3
SnapCompare = Callable[..., bool]


def _at(seconds_ago: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(NOW - timedelta(seconds=seconds_ago))
    return stamp


def _health(**fields: object) -> chain_pb2.StoreHealth:
    base: dict[str, object] = {
        "key_ok": True,
        "gallery_ok": True,
        "software_version": "0.1.0",
        "disk_free_bytes": 41 * GIB,
    }
    return chain_pb2.StoreHealth(**{**base, **fields})  # type: ignore[arg-type]


STORES = [
    chain_pb2.Store(
        name="store-north",
        online=True,
        last_seen=_at(3),
        registered_at=_at(86400 * 30),
        health=_health(
            members_enrolled=128,
            consents_recognition=120,
            consents_model_improvement=97,
            has_visits=True,
            member_visits_today=311,
            unknown_visits_today=1204,
            model_version=2,
            model_sha256="9f2c" * 16,
        ),
    ),
    chain_pb2.Store(
        name="store-south",
        online=True,
        last_seen=_at(5),
        registered_at=_at(86400 * 30),
        pending_commands=1,
        health=_health(
            members_enrolled=96,
            consents_recognition=90,
            consents_model_improvement=64,
            model_version=1,
            disk_free_bytes=GIB + GIB // 5,
            outbox_pending=1,
        ),
    ),
    chain_pb2.Store(
        name="store-east",
        online=False,
        last_seen=_at(260),
        registered_at=_at(86400 * 12),
        pending_commands=2,
        health=_health(
            members_enrolled=77,
            consents_recognition=70,
            consents_model_improvement=41,
            has_visits=True,
            member_visits_today=88,
            unknown_visits_today=402,
            model_version=2,
            gallery_ok=False,
        ),
    ),
    chain_pb2.Store(
        name="store-west",
        online=False,
        revoked=True,
        last_seen=_at(86400 * 2),
        registered_at=_at(86400 * 40),
        health=_health(members_enrolled=12, consents_recognition=12, model_version=1),
    ),
    chain_pb2.Store(name="store-new", registered_at=_at(60), pending_commands=1),
]


def _rounds(count: int, first_loss: float) -> list[chain_pb2.TrainingRound]:
    return [
        chain_pb2.TrainingRound(
            round=n,
            metrics={
                "train-loss": round(first_loss * 0.8 ** (n - 1), 4),
                "num-examples": 250.0 + 10 * (n % 3),
                "stores-answered": 3.0 if n % 4 else 2.0,
                "val-accuracy": round(0.7 + 0.03 * n, 3),
            },
        )
        for n in range(1, count + 1)
    ]


RUNS = [
    chain_pb2.TrainingRun(
        run_id=1,
        status="completed",
        rounds_planned=3,
        started_at=_at(86400 * 3),
        finished_at=_at(86400 * 3 - 900),
        rounds=_rounds(3, 1.9),
        model_version=1,
    ),
    chain_pb2.TrainingRun(
        run_id=2,
        status="completed",
        rounds_planned=5,
        started_at=_at(86400),
        finished_at=_at(86400 - 1500),
        rounds=_rounds(5, 1.6),
        model_version=2,
    ),
    chain_pb2.TrainingRun(
        run_id=3,
        status="failed",
        rounds_planned=4,
        started_at=_at(7200),
        finished_at=_at(7000),
        rounds=_rounds(1, 1.5),
        message="only 1 store answered; 2 needed",
    ),
    chain_pb2.TrainingRun(
        run_id=4, status="running", rounds_planned=8, started_at=_at(600), rounds=_rounds(6, 1.4)
    ),
]
MODELS = chain_pb2.ListModelsReply(
    promoted_version=2,
    models=[
        chain_pb2.ModelVersion(
            version=1,
            sha256="a1b2c3d4e5f6" * 5,
            created_at=_at(86400 * 3 - 900),
            signature_verified=True,
            stores_running=["store-south", "store-west"],
            metrics={"train-loss": 1.216, "num-examples": 270.0},
            run_id=1,
        ),
        chain_pb2.ModelVersion(
            version=2,
            sha256="9f2c" * 16,
            created_at=_at(86400 - 1500),
            signature_verified=True,
            promoted=True,
            stores_running=["store-north", "store-east"],
            metrics={"train-loss": 0.6554, "num-examples": 260.0},
            run_id=2,
        ),
        chain_pb2.ModelVersion(
            version=3, sha256="0badc0de" * 8, created_at=_at(3600), signature_verified=False
        ),
    ],
)


def _answer(store: str, state: str, seconds_ago: float | None) -> chain_pb2.StoreErasure:
    answer = chain_pb2.StoreErasure(store=store, state=state, receipt_verified=state != "pending")
    if seconds_ago is not None:
        answer.answered_at.CopyFrom(_at(seconds_ago))
    return answer


ERASURES = [
    chain_pb2.Erasure(
        request_id="5f0e7c2a-0c4d-4b8e-9a3f-1d2e3f4a5b6c",
        member_id="M-1042",
        requested_at=_at(3600),
        requested_by="admin:admin",
        complete=True,
        stores=[
            _answer(name, "erased", 3500) for name in ("store-east", "store-north", "store-south")
        ],
    ),
    chain_pb2.Erasure(
        request_id="c3d9a1b7-7e55-4f0b-8c2d-9e8f7a6b5c4d",
        member_id="M[bold]-7",
        requested_at=_at(120),
        requested_by="admin:admin",
        stores=[
            _answer("store-east", "pending", None),
            _answer("store-north", "erased", 110),
            _answer("store-south", "erased", 100),
        ],
    ),
]
AUDIT = [
    chain_pb2.AuditRecord(id=n, at=_at(ago), actor=actor, action=action, subject=subject)
    for n, ago, actor, action, subject in [
        (1, 86400 * 40, "coordinator-cli", "store-registered", "store-west"),
        (2, 86400 * 30, "coordinator-cli", "store-registered", "store-north"),
        (3, 86400 * 30, "coordinator-cli", "store-registered", "store-south"),
        (4, 86400 * 12, "coordinator-cli", "store-registered", "store-east"),
        (5, 86400 * 3, "admin:admin", "run-started", "1"),
        (6, 86400 * 3 - 900, "coordinator", "model-added", "1"),
        (7, 86400 * 3 - 800, "admin:admin", "model-promoted", "1"),
        (8, 86400 * 2, "coordinator-cli", "store-revoked", "store-west"),
        (9, 86400 - 1500, "coordinator", "model-added", "2"),
        (10, 86400 - 1400, "admin:admin", "model-promoted", "2"),
        (11, 86400 - 1300, "store:store-north", "command-acknowledged", "store-north"),
        (12, 3600, "admin:admin", "erasure-requested", "5f0e7c2a-0c4d-4b8e-9a3f-1d2e3f4a5b6c"),
        (13, 3500, "store:store-east", "command-acknowledged", "store-east"),
        (14, 3499, "coordinator", "erasure-completed", "5f0e7c2a-0c4d-4b8e-9a3f-1d2e3f4a5b6c"),
        (15, 600, "admin:admin", "run-started", "4"),
        (16, 120, "admin:admin", "erasure-requested", "c3d9a1b7-7e55-4f0b-8c2d-9e8f7a6b5c4d"),
        (17, 110, "store:store-north", "command-acknowledged", "store-north"),
        (18, 60, "coordinator-cli", "store-registered", "store-new"),
    ]
]
AUDIT[10].details_json = '{"command_id": "7d1c", "kind": "adopt-model", "outcome": "adopted"}'

LIVE_EVENTS = [
    chain_pb2.ChainEvent(
        event_id=19, at=_at(2), kind="command-acknowledged", subject="store-south"
    ),
    chain_pb2.ChainEvent(event_id=20, at=_at(1), kind="heartbeat", subject="store-north"),
]
"""Newer than every audit record: the stream delivers them however it resumes."""


class CannedAdmin:
    """The Admin service as canned data; ``reachable`` False makes every call UNAVAILABLE."""

    def __init__(self, role: str = "admin") -> None:
        self.role = role
        self.reachable = True
        self.erased: list[str] = []
        self._closed = threading.Event()

    def _check(self) -> None:
        if not self.reachable:
            raise AdminError("cannot reach the coordinator", grpc.StatusCode.UNAVAILABLE)

    def whoami(self) -> chain_pb2.WhoAmIReply:
        self._check()
        return chain_pb2.WhoAmIReply(name="ada", role=self.role, chain="acme markets")

    def stores(self) -> list[chain_pb2.Store]:
        self._check()
        return list(STORES)

    def runs(self) -> list[chain_pb2.TrainingRun]:
        self._check()
        return list(RUNS)

    def models(self) -> chain_pb2.ListModelsReply:
        self._check()
        return MODELS

    def erasures(self) -> list[chain_pb2.Erasure]:
        self._check()
        return list(ERASURES)

    def audit(self, limit: int = 200, action: str = "") -> list[chain_pb2.AuditRecord]:
        self._check()
        found = [r for r in reversed(AUDIT) if not action or r.action == action]
        return found[:limit]

    def erase(self, member_id: str) -> chain_pb2.Erasure:
        self._check()
        if self.role != "admin":
            raise AdminError("viewers may only read", grpc.StatusCode.PERMISSION_DENIED)
        self.erased.append(member_id)
        return chain_pb2.Erasure(request_id="new", member_id=member_id)

    def promote(self, version: int) -> chain_pb2.Rollout:
        raise AdminError("not in this test", grpc.StatusCode.UNIMPLEMENTED)

    def rollback(self) -> chain_pb2.Rollout:
        raise AdminError("not in this test", grpc.StatusCode.UNIMPLEMENTED)

    def train(self, rounds: int = 0) -> chain_pb2.TrainingRun:
        raise AdminError("not in this test", grpc.StatusCode.UNIMPLEMENTED)

    def events(self, after_event_id: int = 0) -> Iterator[chain_pb2.ChainEvent]:
        self._check()
        yield from (e for e in LIVE_EVENTS if e.event_id > after_event_id)
        # A live stream stays open until the console closes its connection.
        self._closed.wait()

    def close(self) -> None:
        self._closed.set()


def canned_app(admin: CannedAdmin) -> ConsoleApp:
    def connect() -> CannedAdmin:
        admin._closed.clear()
        return admin

    link = ConsoleLink("10.0.0.5:8100", connect)
    settings = ConsoleSettings(poll_seconds=60, first_retry_seconds=30, max_retry_seconds=30)
    return ConsoleApp(link, clock=lambda: NOW, settings=settings)


async def until(pilot: Pilot[None], condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await pilot.pause(0.05)


def _loaded(view: str, *keys: str) -> Callable[[Pilot[None]], Awaitable[None]]:
    """Wait for the data and both ticker events, open ``view``, press ``keys``; a text
    cursor is left steady (a blinking one would differ from picture to picture)."""

    async def run_before(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, ConsoleApp)
        await until(pilot, lambda: app.snapshot is not None)
        main = app.screen
        assert isinstance(main, MainScreen)
        await until(pilot, lambda: len(main.query_one(EventTicker).events) == 2)
        main.action_view(view)
        await pilot.pause()
        await pilot.press(*keys)
        await pilot.pause()
        for field in app.screen.query(Input):
            field.cursor_blink = False
        await pilot.pause()

    return run_before


WIDE = pytest.param((120, 40), id="120x40", marks=pytest.mark.slow)
"""The wide pictures double the run time; the 80-column ones are the harder layout."""


@pytest.mark.parametrize("size", [WIDE, pytest.param((80, 24), id="80x24")])
@pytest.mark.parametrize("view", ["stores", "training", "models", "erasures", "audit"])
def test_views(snap_compare: SnapCompare, view: str, size: tuple[int, int]) -> None:
    assert snap_compare(canned_app(CannedAdmin()), terminal_size=size, run_before=_loaded(view))


def test_viewer(snap_compare: SnapCompare) -> None:
    """A viewer's key bar offers no act; the status line says read only."""
    assert snap_compare(canned_app(CannedAdmin("viewer")), run_before=_loaded("stores"))


def test_store_details(snap_compare: SnapCompare) -> None:
    """Enter on store-east: its health in two columns, its audit records below."""
    app = canned_app(CannedAdmin())
    assert snap_compare(
        app, terminal_size=(120, 40), run_before=_loaded("stores", "down", "down", "enter")
    )


def test_erase_form_refuses_two_different_ids(snap_compare: SnapCompare) -> None:
    async def fill_in(pilot: Pilot[None]) -> None:
        await _loaded("erasures", "e")(pilot)
        await until(pilot, lambda: isinstance(pilot.app.focused, Input))
        await pilot.press(*"M-1", "tab", *"M-2", "enter")
        await pilot.pause()
        for field in pilot.app.screen.query(Input):
            field.cursor_blink = False
        await pilot.pause()

    assert snap_compare(canned_app(CannedAdmin()), run_before=fill_in)


def test_promotion_names_the_stores_that_change(snap_compare: SnapCompare) -> None:
    keys = ("down", "down", "p")
    assert snap_compare(canned_app(CannedAdmin()), run_before=_loaded("models", *keys))


def test_unreachable_coordinator_banner(snap_compare: SnapCompare) -> None:
    """The last data stays, greyed out, under a banner that says since when."""
    admin = CannedAdmin()

    async def lose_it(pilot: Pilot[None]) -> None:
        await _loaded("stores")(pilot)
        admin.reachable = False
        await pilot.press("f5")
        banner = pilot.app.screen.query_one(LinkBanner)
        await until(pilot, lambda: bool(banner.display))

    assert snap_compare(canned_app(admin), run_before=lose_it)
