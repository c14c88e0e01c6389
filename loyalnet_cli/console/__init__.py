"""``loyalnet admin console``: a full-screen view of the chain for its admins.

It reads the coordinator's ``Admin`` service over mutual TLS with the admin's (or a
viewer's) certificate, refreshes every two seconds and on every chain event, and lets an
admin erase a member, promote or roll back a model version and start training. It never
shows a face or a template: the service has none to give.
"""

from __future__ import annotations

from pathlib import Path

from coordinator.home import CoordinatorHome
from loyalnet_cli.console.app import ConsoleApp, ConsoleSettings
from loyalnet_cli.console.link import ConsoleLink, link_for_home

__all__ = ["ConsoleApp", "ConsoleLink", "ConsoleSettings", "link_for_home", "run_console"]


def run_console(
    home: CoordinatorHome,
    address: str | None,
    certificate: Path | None,
    key: Path | None,
) -> None:
    """Run the console until the admin quits, with ``loyalnet admin``'s options.

    Raises:
        LoyalnetError: not a coordinator folder, or the certificate or key cannot be used;
            raised before the terminal is taken over, so the message stays readable.
    """
    ConsoleApp(link_for_home(home, address, certificate, key)).run()
