"""The ``loyalnet`` command's entry point: it loads only the group a command belongs to."""

from __future__ import annotations

import subprocess
import sys

GROUPS = ("store", "coordinator", "admin", "bench", "demo", "sim")


def _python(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )


def test_an_admin_command_loads_no_face_code_and_no_torch() -> None:
    done = _python(
        "import sys\n"
        "from loyalnet_cli.main import _mount_subcommands\n"
        "_mount_subcommands(['admin', '--dir', 'chain', 'stores', '--json'])\n"
        "loaded = sorted(m for m in ('torch', 'store_node', 'simulations') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    assert done.returncode == 0, done.stderr


def test_help_and_a_mistyped_group_see_every_group() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "loyalnet_cli", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert all(f" {group} " in shown.stdout for group in GROUPS), shown.stdout
    mistyped = subprocess.run(
        [sys.executable, "-m", "loyalnet_cli", "stor", "members"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert mistyped.returncode == 2
    assert "No such command 'stor'" in mistyped.stderr
