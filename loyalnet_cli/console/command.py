"""``loyalnet admin console``: the console as a sub-command of the admin group."""

from __future__ import annotations

import typer

from coordinator.admin_cli import AdminTarget
from loyalnet_cli.console import run_console


def console_command(context: typer.Context) -> None:
    """Open the live console: stores, training, models, erasures, audit (q quits)."""
    target = context.obj
    assert isinstance(target, AdminTarget)
    run_console(target.home, target.address, target.certificate, target.key)
