"""``python -m loyalnet_cli.console --dir C``: the console without the ``loyalnet`` CLI around
it (``loyalnet admin console`` mounts the same :func:`run_console`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from coordinator.home import CoordinatorHome
from loyalnet.errors import LoyalnetError
from loyalnet.settings import Settings
from loyalnet_cli.console import run_console


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loyalnet_cli.console",
        description="The chain admins' console: a full-screen view of the coordinator.",
    )
    parser.add_argument("--dir", type=Path, help="the coordinator folder")
    parser.add_argument("--address", help="HOST:PORT of the control plane")
    parser.add_argument("--certificate", type=Path, help="your certificate (tls/admin.crt)")
    parser.add_argument("--key", type=Path, help="your private key (tls/admin.key)")
    args = parser.parse_args(argv)
    home = CoordinatorHome(args.dir or Settings.from_environment().coordinator_dir)
    try:
        run_console(home, args.address, args.certificate, args.key)
    except LoyalnetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
