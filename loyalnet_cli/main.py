"""The ``loyalnet`` command: one entry point, a sub-command group per role.

Every failure reaches the user as one readable line and a non-zero exit code; set
``LOYALNET_DEBUG=1`` to see the traceback of an unexpected error.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Callable, Sequence

import typer
from rich.console import Console
from rich.markup import escape

from loyalnet.errors import LoyalnetError

app = typer.Typer(
    name="loyalnet",
    help=(
        "Federated face recognition for retail loyalty programmes. "
        "Stores enrol, recognise and forget their consenting members; no face leaves a store."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _mount_store() -> None:
    from store_node.cli import store_app

    app.add_typer(store_app, name="store")


def _mount_coordinator() -> None:
    from coordinator.cli import coordinator_app

    app.add_typer(coordinator_app, name="coordinator")


def _mount_admin() -> None:
    from coordinator.admin_cli import admin_app
    from loyalnet_cli.console.command import console_command

    # The console is the top floor: mounted here so coordinator/ never imports it.
    admin_app.command("console")(console_command)
    app.add_typer(admin_app, name="admin")


def _mount_bench() -> None:
    from coordinator.control_plane_bench import control_plane_command
    from store_node.bench.cli import bench_app

    # The bench group is store_node's, which must not import the coordinator: mounted here.
    bench_app.command("control-plane")(control_plane_command)
    app.add_typer(bench_app, name="bench")


def _mount_demo() -> None:
    from loyalnet_cli.demo.cli import demo_app

    app.add_typer(demo_app, name="demo")


def _mount_sim() -> None:
    from simulations.cli import sim_app

    app.add_typer(sim_app, name="sim")


_GROUPS: dict[str, Callable[[], None]] = {
    "store": _mount_store,
    "coordinator": _mount_coordinator,
    "admin": _mount_admin,
    "bench": _mount_bench,
    "demo": _mount_demo,
    "sim": _mount_sim,
}


def _mount_subcommands(argv: Sequence[str]) -> None:
    """Mount the group ``argv`` names, or every group when it names none (help, a typo).

    Imported here, and only the group asked for: the store's commands load torch, the
    coordinator's alembic, the demo both. ``loyalnet admin stores`` then starts in a fraction
    of a second instead of several, and ``loyalnet --help`` still lists every group.
    """
    wanted = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, mount in _GROUPS.items():
        if wanted not in _GROUPS or name == wanted:
            mount()


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; turn every error into one line on stderr and exit code 1."""
    if argv is None:
        argv = sys.argv[1:]
    _mount_subcommands(argv)
    # Error messages quote ids, names and paths as given: escape() shows them as typed, never
    # as rich markup (a member id "M[/oops]" must not crash the error report itself).
    err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
    try:
        app(args=argv)
    except LoyalnetError as error:
        err.print(f"[bold red]error:[/] {escape(str(error))}")
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        sys.exit(130)
    except (OSError, sqlite3.Error) as error:
        if os.environ.get("LOYALNET_DEBUG"):
            raise
        err.print(f"[bold red]error:[/] {escape(str(error))}")
        sys.exit(1)
    except Exception as error:
        if os.environ.get("LOYALNET_DEBUG"):
            raise
        err.print(
            f"[bold red]internal error:[/] {type(error).__name__}: {escape(str(error))} "
            "(run again with LOYALNET_DEBUG=1 for the traceback, and report it)"
        )
        sys.exit(2)
