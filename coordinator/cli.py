"""``loyalnet coordinator``: set up the chain's coordinator and admit stores.

Every command works on one coordinator folder (``coordinator.home``), given by ``--dir DIR``
or, without it, by ``LOYALNET_COORDINATOR`` or ``coordinator_dir`` in the user's config file
(see ``loyalnet.settings``), else ``./coordinator-home``.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from coordinator.flwr_cli import StoreAlreadyRegisteredError
from coordinator.home import (
    DEFAULT_CONTROL_PORT,
    DEFAULT_HEARTBEAT_SECONDS,
    DEFAULT_SUPERLINK_PORT,
    CoordinatorHome,
    create_coordinator_home,
)
from coordinator.pki import issue_person_certificate
from coordinator.processes import LOCALHOST
from coordinator.registry import open_registry
from coordinator.store_admission import admit_to_control_plane
from loyalnet.chain_tls import Role
from loyalnet.settings import COORDINATOR_ENV, Settings

coordinator_app = typer.Typer(
    help=(
        "The chain's coordinator: its certificates, the stores it admits, federated training. "
        "Start with `loyalnet coordinator init`."
    ),
    no_args_is_help=True,
)

DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database",
        help="The registry's SQLAlchemy URL (default: coordinator.toml's, else coordinator.db).",
        show_default=False,
    ),
]

DirOption = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help=(
            f"The coordinator folder (default: ${COORDINATOR_ENV}, the config file's "
            "coordinator_dir, or ./coordinator-home)."
        ),
        show_default=False,
    ),
]

out = Console(soft_wrap=True)


def _home(folder: Path | None) -> CoordinatorHome:
    return CoordinatorHome(
        folder if folder is not None else Settings.from_environment().coordinator_dir
    )


@coordinator_app.command()
def init(
    folder: DirOption = None,
    chain: Annotated[
        str, typer.Option("--chain", help="The chain's name, written into its certificates.")
    ] = "loyalnet",
    hosts: Annotated[
        list[str] | None,
        typer.Option(
            "--host",
            help="A name or IP address stores reach the SuperLink by; repeat for several "
            "(localhost and 127.0.0.1 are always included).",
        ),
    ] = None,
    port: Annotated[
        int, typer.Option("--port", help="The SuperLink's port.")
    ] = DEFAULT_SUPERLINK_PORT,
    control_port: Annotated[
        int,
        typer.Option(help="The control plane's port (stores' sync, `loyalnet admin`)."),
    ] = DEFAULT_CONTROL_PORT,
    heartbeat_seconds: Annotated[
        int, typer.Option(help="How often stores heartbeat, in seconds (1-3600).")
    ] = DEFAULT_HEARTBEAT_SECONDS,
) -> None:
    """Create the coordinator folder: certificates, stores/ and coordinator.toml.

    The folder gets a CA and a SuperLink certificate for the hosts, and the Ed25519 key that
    signs every model version (keys 0600). Hand tls/ca.crt and tls/model-signing.pub to every
    store (`loyalnet store join --ca ca.crt ...` finds the key beside the certificate); the
    private keys never leave this folder.
    """
    home = create_coordinator_home(
        _home(folder).folder, chain, hosts or [], port, control_port, heartbeat_seconds
    )
    hosts_text = ", ".join(home.read_config().hosts)
    out.print(
        f"coordinator of chain [bold]{escape(chain)}[/] created in {escape(str(home.folder))}"
    )
    out.print(f"  SuperLink certificate for {escape(hosts_text)}, port {port}")
    out.print(
        f"  model-signing key {escape(str(home.tls.model_signing_key))} (0600): signs every "
        "model version"
    )
    out.print(
        f"  give every store the CA certificate {escape(str(home.tls.ca_certificate.resolve()))} "
        "and the model-signing public key "
        f"{escape(str(home.tls.model_signing_public_key.resolve()))}, side by side:"
    )
    out.print(
        f"    loyalnet store join --ca ca.crt --superlink HOST:{port} "
        f"--control-plane HOST:{control_port} --certificate STORE.crt"
    )
    out.print(
        f"  admin certificate {escape(str(home.tls.admin_certificate))}: "
        "`loyalnet admin --dir ... stores` once `loyalnet coordinator serve` runs"
    )


@coordinator_app.command("register-store")
def register_store(
    public_key: Annotated[
        Path, typer.Argument(help="The store's node.pub, printed by `loyalnet store join`.")
    ],
    name: Annotated[str, typer.Option("--name", help="The store's name in the chain.")],
    folder: DirOption = None,
    database: DatabaseOption = None,
) -> None:
    """Admit a store: its key, its control-plane certificate, the registry, the SuperLink.

    Keeps the store's public key in stores/NAME.pub, issues its control-plane certificate
    stores/NAME.crt for that key (hand it to the store: `loyalnet store join ... --certificate
    NAME.crt`), and registers the store in the coordinator's registry, where a promoted model
    version is queued for it at once. The SuperLink registration is made when the SuperLink runs
    on this machine (127.0.0.1 and the port in coordinator.toml); otherwise run this command
    again once it runs. Running it again for a registered store changes nothing.
    """
    home = _home(folder)
    config = home.read_config()
    kept, new = home.admit_store(name, public_key)
    where = "kept in" if new else "already in"
    out.print(f"store [bold]{escape(name)}[/]: public key {where} {escape(str(kept))}")
    certificate = admit_to_control_plane(home, name, kept, database)
    out.print(f"  control-plane certificate {escape(str(certificate))}; registered in the registry")
    address = f"{LOCALHOST}:{config.superlink_port}"
    if not _listening(config.superlink_port):
        out.print(
            f"  [yellow]no SuperLink runs at {address}[/]: not registered yet; run this "
            "command again once the SuperLink runs."
        )
        return
    cli = home.local_federation().cli
    cli.configure(address, home.tls.ca_certificate)
    try:
        node_id = cli.register_supernode(kept, name)
    except StoreAlreadyRegisteredError:
        out.print(f"  already registered with the SuperLink at {address}")
        return
    out.print(f"  registered with the SuperLink at {address}: node id {node_id}")


@coordinator_app.command("revoke-store")
def revoke_store(
    name: Annotated[str, typer.Argument(help="The store's name in the chain.")],
    folder: DirOption = None,
    database: DatabaseOption = None,
) -> None:
    """Take a store's certificate back: the control plane refuses it from now on (within a minute).

    Its commands stay queued and its receipts kept. To admit the store again, register it
    anew (`register-store`), with a new key if the old one may have leaked.
    """
    home = _home(folder)
    registry = open_registry(home.database_url(database))
    try:
        registry.revoke_store(name, datetime.now(UTC), actor="coordinator-cli")
    finally:
        registry.close()
    out.print(f"store [bold]{escape(name)}[/] revoked: the control plane no longer admits it")


@coordinator_app.command("issue-certificate")
def issue_certificate(
    name: Annotated[str, typer.Argument(help="The person's name, shown in the audit log.")],
    role: Annotated[
        str, typer.Option(help="admin (reads and acts) or viewer (reads only).")
    ] = "viewer",
    out_dir: Annotated[
        Path, typer.Option("--out", help="Where to write NAME.crt and NAME.key (0600).")
    ] = Path("."),
    folder: DirOption = None,
) -> None:
    """Issue a control-plane certificate for a person: `loyalnet admin --certificate --key`."""
    home = _home(folder)
    home.read_config()
    if role not in (Role.ADMIN.value, Role.VIEWER.value):
        raise typer.BadParameter("--role must be admin or viewer.")
    certificate, key = out_dir / f"{name}.crt", out_dir / f"{name}.key"
    out_dir.mkdir(parents=True, exist_ok=True)
    issue_person_certificate(home.tls, name, Role(role), certificate, key)
    out.print(
        f"{role} certificate for {escape(name)}: {escape(str(certificate))}, "
        f"key {escape(str(key))} (0600)"
    )


@coordinator_app.command()
def serve(
    folder: DirOption = None,
    database: DatabaseOption = None,
    host: Annotated[
        str, typer.Option(help="Address the control plane binds (127.0.0.1: this machine only).")
    ] = "0.0.0.0",
    port: Annotated[
        int | None, typer.Option(help="The control plane's port (default: coordinator.toml's).")
    ] = None,
    no_superlink: Annotated[
        bool,
        typer.Option(
            "--no-superlink", help="Serve the control plane only (no federated training)."
        ),
    ] = False,
) -> None:
    """Run the coordinator: control plane and Flower SuperLink, until Ctrl-C or SIGTERM.

    Opens the registry (SQLite coordinator.db in the folder unless --database or
    coordinator.toml names another, e.g. postgresql+psycopg://user:pw@host/loyalnet) and
    applies its migrations, then serves stores (heartbeats, commands, receipts) and admins
    (`loyalnet admin`). Stopping stops everything it started.
    """
    home = _home(folder)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    # Imported here: serving loads model versions (torch), which the rest of this command
    # line must not pay for (and the coordinator's CLI holds no face code).
    from coordinator.serve import RunningCoordinator
    from coordinator.serve import serve as run_coordinator

    def ready(running: RunningCoordinator) -> None:
        where = f"{host}:{running.plane.port}"
        out.print(f"control plane listening on {escape(where)} (mutual TLS)")
        federation = running.federation
        if federation is not None and federation.superlink is not None:
            out.print(f"SuperLink listening on {escape(federation.superlink.address)}")
        out.print("Ctrl-C or SIGTERM stops the coordinator")

    run_coordinator(
        home,
        stop,
        database=database,
        host=host,
        port=port,
        superlink=not no_superlink,
        ready=ready,
    )
    out.print("coordinator stopped")


def _listening(port: int) -> bool:
    try:
        with socket.create_connection((LOCALHOST, port), timeout=2.0):
            return True
    except OSError:
        return False
