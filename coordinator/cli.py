"""``loyalnet coordinator``: set up the chain's coordinator and admit stores.

Every command works on one coordinator folder (``coordinator.home``), given by ``--dir DIR``
or, without it, by ``LOYALNET_COORDINATOR`` or ``coordinator_dir`` in the user's config file
(see ``loyalnet.settings``), else ``./coordinator-home``.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from coordinator.flwr_cli import StoreAlreadyRegisteredError
from coordinator.home import DEFAULT_SUPERLINK_PORT, CoordinatorHome, create_coordinator_home
from coordinator.processes import LOCALHOST
from loyalnet.settings import COORDINATOR_ENV, Settings

coordinator_app = typer.Typer(
    help=(
        "The chain's coordinator: its certificates, the stores it admits, federated training. "
        "Start with `loyalnet coordinator init`."
    ),
    no_args_is_help=True,
)

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
) -> None:
    """Create the coordinator folder: certificates, stores/ and coordinator.toml.

    The folder gets a CA and a SuperLink certificate for the hosts, and the Ed25519 key that
    signs every model version (keys 0600). Hand tls/ca.crt and tls/model-signing.pub to every
    store (`loyalnet store join --ca ca.crt ...` finds the key beside the certificate); the
    private keys never leave this folder.
    """
    home = create_coordinator_home(_home(folder).folder, chain, hosts or [], port)
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
    out.print(f"    loyalnet store join --ca ca.crt --superlink HOST:{port}")


@coordinator_app.command("register-store")
def register_store(
    public_key: Annotated[
        Path, typer.Argument(help="The store's node.pub, printed by `loyalnet store join`.")
    ],
    name: Annotated[str, typer.Option("--name", help="The store's name in the chain.")],
    folder: DirOption = None,
) -> None:
    """Admit a store: keep its public key in stores/NAME.pub and register it with the SuperLink.

    The registration is made when the coordinator's SuperLink is running on this machine
    (127.0.0.1 and the port in coordinator.toml) and kept in its database, restarts
    included. When the SuperLink is not running, only the key is kept: run this command
    again once it runs. Running it again for a registered store changes nothing.
    """
    home = _home(folder)
    config = home.read_config()
    kept, new = home.admit_store(name, public_key)
    where = "kept in" if new else "already in"
    out.print(f"store [bold]{escape(name)}[/]: public key {where} {escape(str(kept))}")
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


def _listening(port: int) -> bool:
    try:
        with socket.create_connection((LOCALHOST, port), timeout=2.0):
            return True
    except OSError:
        return False
