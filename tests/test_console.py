"""The console against a real control plane: Textual's pilot in-process, and the real entry
point in tmux against a `loyalnet coordinator serve` process.

Stores are played by the test over real mutual TLS with keys and certificates from the
chain's CA (as in test_control_plane.py): they heartbeat, pull their commands and answer
erasures with receipts signed by their own keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from textual.notifications import SeverityLevel
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, TabbedContent

from coordinator.control_plane.server import ControlPlane, ControlPlaneSettings
from coordinator.home import CoordinatorHome, create_coordinator_home
from coordinator.pki import issue_person_certificate, issue_store_certificate
from coordinator.processes import free_port
from coordinator.registry import Registry, open_registry
from loyalnet.chain.v1 import chain_pb2, chain_pb2_grpc
from loyalnet.chain_tls import ClientIdentity, Role, private_key_pem
from loyalnet.receipts import ERASURE_STATEMENT, sign_receipt
from loyalnet_cli.console import ConsoleApp, ConsoleSettings, link_for_home
from loyalnet_cli.console.banner import LinkBanner
from loyalnet_cli.console.main_screen import MainScreen
from loyalnet_cli.console.modals.erase_form import EraseForm
from loyalnet_cli.console.modals.erasure_progress import ErasureProgress
from loyalnet_cli.console.ticker import EventTicker
from loyalnet_cli.console.views.erasures import ErasuresView
from loyalnet_cli.console.views.stores import StoresView

REPO = Path(__file__).resolve().parents[1]
FAST = ConsoleSettings(poll_seconds=0.3, first_retry_seconds=0.2, max_retry_seconds=0.5)
MEMBER = "M-[1]"  # rich markup characters: shown and sent as typed


class Fleet:
    """Stores that heartbeat every 0.2 s and, once told to, answer their erasure commands."""

    def __init__(self, tls_ca: bytes, address: str) -> None:
        self._ca = tls_ca
        self._address = address
        self.stores: list[FakeStore] = []
        self.answer_erasures = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def add(self, store: FakeStore) -> None:
        self.stores.append(store)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for store in self.stores:
            store.channel.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            for store in self.stores:
                # While the control plane restarts beats fail; the next one tries again.
                with contextlib.suppress(grpc.RpcError):
                    store.beat(self.answer_erasures.is_set())
            self._stop.wait(0.2)


@dataclass
class FakeStore:
    name: str
    key: ec.EllipticCurvePrivateKey
    channel: grpc.Channel
    members: int = 40

    def beat(self, answer_erasures: bool) -> None:
        stub = chain_pb2_grpc.StoreSyncStub(self.channel)
        health = chain_pb2.StoreHealth(
            members_enrolled=self.members,
            consents_recognition=self.members,
            consents_model_improvement=self.members // 2,
            key_ok=True,
            gallery_ok=True,
            disk_free_bytes=50 * 1024**3,
        )
        stub.Heartbeat(chain_pb2.HeartbeatRequest(health=health), timeout=2)
        if not answer_erasures:
            return
        for command in stub.PullCommands(chain_pb2.PullCommandsRequest(), timeout=2).commands:
            if command.WhichOneof("action") != "erase_member":
                continue
            body, signature = sign_receipt(
                {
                    "command_id": command.command_id,
                    "store": self.name,
                    "kind": "erase-member",
                    "request_id": command.erase_member.request_id,
                    "member_id": command.erase_member.member_id,
                    "statement": ERASURE_STATEMENT,
                    "done_at": datetime.now(UTC).isoformat(),
                },
                self.key,
            )
            receipt = chain_pb2.Receipt(body=body, signature=signature)
            stub.Acknowledge(
                chain_pb2.AcknowledgeRequest(command_id=command.command_id, receipt=receipt),
                timeout=2,
            )


def register_store(home: CoordinatorHome, registry: Registry, name: str, address: str) -> FakeStore:
    """Admit a store with a fresh key and its control-plane certificate, as register-store
    does, and return it ready to call ``address``."""
    key = ec.generate_private_key(ec.SECP384R1())
    pem = issue_store_certificate(home.tls, name, key.public_key())
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    registry.register_store(
        name, public_pem.decode("ascii"), hashlib.sha256(pem).hexdigest(), datetime.now(UTC)
    )
    identity = ClientIdentity(home.tls.ca_certificate.read_bytes(), pem, private_key_pem(key))
    return FakeStore(name, key, grpc.secure_channel(address, identity.credentials()))


@dataclass
class Chain:
    """A control plane in this process, its registry, and two heartbeating stores."""

    home: CoordinatorHome
    registry: Registry
    settings: ControlPlaneSettings
    plane: ControlPlane
    fleet: Fleet
    folder: Path
    stopped: list[ControlPlane] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.plane.port}"

    def restart(self) -> None:
        """A new control plane on the same port (the old one must be stopped)."""
        self.plane = ControlPlane(self.settings, self.home.tls, self.registry)
        self.plane.start()

    def viewer(self) -> tuple[Path, Path]:
        certificate, key = self.folder / "vera.crt", self.folder / "vera.key"
        issue_person_certificate(self.home.tls, "vera", Role.VIEWER, certificate, key)
        return certificate, key


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    home = create_coordinator_home(tmp_path / "coordinator", "console chain")
    registry = open_registry(f"sqlite:///{tmp_path / 'registry.db'}")
    settings = ControlPlaneSettings(
        host="127.0.0.1",
        port=free_port(),
        heartbeat_seconds=1,
        models_dir=home.models_dir,
        chain="console chain",
        store_cache_seconds=0.0,
    )
    plane = ControlPlane(settings, home.tls, registry)
    plane.start()
    fleet = Fleet(home.tls.ca_certificate.read_bytes(), f"127.0.0.1:{plane.port}")
    running = Chain(home, registry, settings, plane, fleet, tmp_path)
    for name, members in (("store-a", 40), ("store-b", 25)):
        store = register_store(home, registry, name, running.address)
        store.members = members
        fleet.add(store)
    fleet.start()
    try:
        yield running
    finally:
        fleet.stop()
        running.plane.stop(grace_seconds=0.5)
        registry.close()


class RecordingConsole(ConsoleApp):
    """The console, remembering the notifications it showed."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.notes: list[tuple[SeverityLevel, str]] = []

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        self.notes.append((severity, message))
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)


async def until(pilot: Pilot[None], condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.1)


def table_rows(app: ConsoleApp, view: type[StoresView | ErasuresView]) -> dict[str, list[str]]:
    """The rows of a view's first table as plain text, by row key."""
    table: DataTable[object] = main_screen(app).query_one(view).query(DataTable).first()
    return {str(key.value): [str(cell) for cell in table.get_row(key)] for key in table.rows}


def main_screen(app: ConsoleApp) -> MainScreen:
    screen = app.screen_stack[0]
    assert isinstance(screen, MainScreen)
    return screen


def form_ready(app: ConsoleApp) -> bool:
    """The erasure form is up and its first field has the focus (keys typed sooner are lost)."""
    focused = app.focused
    return (
        isinstance(app.screen, EraseForm) and isinstance(focused, Input) and focused.id == "member"
    )


def stores_online(app: ConsoleApp) -> bool:
    rows = table_rows(app, StoresView)
    return set(rows) == {"store-a", "store-b"} and all(row[1] == "online" for row in rows.values())


def test_an_admin_sees_the_stores_and_erases_a_member_everywhere(chain: Chain) -> None:
    async def scenario() -> None:
        app = RecordingConsole(link_for_home(chain.home, chain.address), settings=FAST)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: stores_online(app), "both stores online")
            # Heartbeat numbers reach the registry in the coordinator's next flush (1 s).
            await until(
                pilot, lambda: table_rows(app, StoresView)["store-a"][4] == "40", "40 members"
            )

            await pilot.press("e")
            await until(pilot, lambda: form_ready(app), "the erasure form")
            await pilot.press(*MEMBER, "tab", *"M-[2]", "enter")
            await pilot.pause(0.3)
            assert isinstance(app.screen, EraseForm), "two different ids must not be sent"
            assert chain.registry.list_erasures() == []
            await pilot.press(*["backspace"] * 5, *MEMBER, "enter")
            await until(pilot, lambda: isinstance(app.screen, ErasureProgress), "the progress")
            [erasure] = chain.registry.list_erasures()
            assert erasure.member_id == MEMBER

            chain.fleet.answer_erasures.set()
            progress = app.screen
            assert isinstance(progress, ErasureProgress)
            await until(pilot, lambda: progress.erasure.complete, "every store's receipt")
            assert {s.state for s in progress.erasure.stores} == {"erased"}
            await pilot.press("escape")
            await pilot.press("4")
            rows = table_rows(app, ErasuresView)
            await until(
                pilot,
                lambda: table_rows(app, ErasuresView)[erasure.request_id][5] == "complete",
                "the Erasures view showing the request complete",
            )
            rows = table_rows(app, ErasuresView)
            assert rows[erasure.request_id][1] == MEMBER
            ticker = main_screen(app).query_one(EventTicker)
            await until(
                pilot,
                lambda: any(e.kind == "erasure-completed" for e in ticker.events),
                "the erasure-completed event",
            )
            assert ("error", MEMBER) not in app.notes

    asyncio.run(scenario())


def test_a_viewer_sees_everything_and_can_act_on_nothing(chain: Chain) -> None:
    certificate, key = chain.viewer()

    async def scenario() -> None:
        link = link_for_home(chain.home, chain.address, certificate, key)
        app = RecordingConsole(link, settings=FAST)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: stores_online(app), "both stores online")
            main = main_screen(app)
            for action in ("erase", "promote", "rollback", "train"):
                assert main.check_action(action, ()) is False, action
            await pilot.press("e", "t")
            await pilot.pause(0.3)
            assert app.screen is main

            # Triggered anyway (as before the coordinator said who this is): it refuses.
            main.action_erase()
            await until(pilot, lambda: form_ready(app), "the erasure form")
            await pilot.press(*"M-9", "tab", *"M-9", "enter")
            await until(
                pilot,
                lambda: any("PERMISSION_DENIED" in text for _, text in app.notes),
                "the coordinator's refusal",
            )
            assert app.notes[-1][0] == "error"
            assert chain.registry.list_erasures() == []

    asyncio.run(scenario())


def test_a_lost_coordinator_shows_a_banner_until_it_is_back(chain: Chain) -> None:
    async def scenario() -> None:
        app = ConsoleApp(link_for_home(chain.home, chain.address), settings=FAST)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: stores_online(app), "both stores online")
            main = main_screen(app)
            banner = main.query_one(LinkBanner)
            views = main.query_one(TabbedContent)
            assert not banner.display

            await asyncio.to_thread(chain.plane.stop, 0.2)
            await until(pilot, lambda: banner.display, "the banner")
            text = str(banner.render())
            assert f"unreachable at {chain.address}" in text and "retrying" in text
            assert views.has_class("-stale")
            assert set(table_rows(app, StoresView)) == {"store-a", "store-b"}  # kept

            await asyncio.to_thread(chain.restart)
            await until(pilot, lambda: not banner.display, "the banner to go")
            assert not views.has_class("-stale")
            # The event stream is back too: a new audit record reaches the ticker.
            chain.registry.revoke_store("store-b", datetime.now(UTC))
            ticker = main.query_one(EventTicker)
            await until(
                pilot,
                lambda: any(e.kind == "store-revoked" for e in ticker.events),
                "the event stream to reconnect",
            )
            await until(
                pilot,
                lambda: table_rows(app, StoresView)["store-b"][1].startswith("revoked"),
                "store-b revoked",
            )

    asyncio.run(scenario())


class Tmux:
    """A tmux server of the test's own (its own socket), killed at the end."""

    def __init__(self) -> None:
        self.socket = f"loyalnet-console-{os.getpid()}-{secrets.token_hex(4)}"

    def __call__(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10
        )
        return done.stdout

    def alive(self) -> bool:
        result = subprocess.run(
            ["tmux", "-L", self.socket, "has-session"], capture_output=True, timeout=10
        )
        return result.returncode == 0

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)
        # A server that ended with its last session leaves its socket file behind.
        folder = Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}"
        (folder / self.socket).unlink(missing_ok=True)


def _wait(condition: Callable[[], bool], seconds: float, what: str, log: Callable[[], str]) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{log()}")
        time.sleep(0.2)


def test_the_console_runs_in_a_terminal_against_a_real_coordinator(tmp_path: Path) -> None:
    port = free_port()
    home = create_coordinator_home(tmp_path / "coordinator", "tmux chain", control_port=port)
    registry = open_registry(home.database_url())
    stores = [register_store(home, registry, n, f"127.0.0.1:{port}") for n in ("north", "south")]
    registry.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOYALNET_")}
    log_path = tmp_path / "coordinator.log"
    tmux = Tmux()
    with log_path.open("wb") as log:
        coordinator = subprocess.Popen(
            [
                *(sys.executable, "-m", "loyalnet_cli", "coordinator", "serve"),
                *("--dir", str(home.folder), "--no-superlink", "--host", "127.0.0.1"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
            start_new_session=True,
        )
    try:
        _wait(
            lambda: "listening" in log_path.read_text(errors="replace"),
            60,
            "the coordinator",
            lambda: log_path.read_text(errors="replace"),
        )
        for store in stores:
            store.beat(answer_erasures=False)
        exit_file = tmp_path / "console.exit"
        command = (
            f"{sys.executable} -m loyalnet_cli.console --dir {home.folder}; echo $? > {exit_file}"
        )
        tmux("new-session", "-d", "-x", "100", "-y", "30", "-c", str(REPO), command)

        def screen() -> str:
            return tmux("capture-pane", "-p")

        _wait(
            lambda: "north" in screen() and "south" in screen() and "(admin)" in screen(),
            30,
            "the stores on screen",
            screen,
        )
        assert "unreachable" not in screen()
        tmux("send-keys", "q")
        _wait(lambda: exit_file.exists() and not tmux.alive(), 15, "the console to quit", screen)
        assert exit_file.read_text().strip() == "0"
    finally:
        tmux.kill()
        for store in stores:
            store.channel.close()
        if coordinator.poll() is None:
            os.killpg(coordinator.pid, signal.SIGKILL)
            coordinator.wait()
