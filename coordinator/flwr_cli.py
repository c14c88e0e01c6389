"""The ``flwr`` command line, pointed at one SuperLink through a config.toml of its own.

Flower 1.42 keeps SuperLink connections in ``$FLWR_HOME/config.toml``; :class:`FlwrCli` writes
one connection named :data:`CONNECTION` there (TLS with the chain's CA certificate, or
insecure for tests) and runs ``flwr ... --format json`` commands against it, answering parsed
JSON or raising :class:`~coordinator.errors.FlowerProcessError` with what ``flwr`` said.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator.errors import FlowerProcessError
from coordinator.toml_text import TomlScalar, toml_table

CONNECTION = "loyalnet"
"""The SuperLink connection's name in the ``flwr`` CLI's config.toml."""
FLWR_TIMEOUT_SECONDS = 120


class StoreAlreadyRegisteredError(FlowerProcessError):
    """The SuperLink already knows a store's public key; registering it again changes nothing."""


def flower_environment(bin_dir: Path, flwr_home: Path) -> dict[str, str]:
    """The environment Flower processes and commands run with.

    Flower starts its helpers (flower-superexec, flwr-serverapp, ...) by name, so ``bin_dir``
    goes first on PATH; update checks, telemetry and runtime dependency installation are off.
    """
    path = os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")])
    return {
        **os.environ,
        "PATH": path,
        "FLWR_HOME": str(flwr_home),
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "PYTHONUNBUFFERED": "1",  # logs as they happen, for log tails
    }


@dataclass(frozen=True)
class FlwrCli:
    """``flwr`` with ``FLWR_HOME=flwr_home``; see the module docstring.

    Attributes:
        flwr_home: holds the config.toml with the connection.
        bin_dir: where the ``flwr`` command is; default: beside this Python interpreter.
    """

    flwr_home: Path
    bin_dir: Path = field(default_factory=lambda: Path(sys.executable).parent)

    def configure(self, address: str, root_certificates: Path | None) -> None:
        """Point the connection at ``address``: over TLS trusting ``root_certificates`` (the
        chain's CA certificate), or insecure when it is None (tests and debugging only)."""
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        connection: dict[str, TomlScalar] = {"address": address}
        if root_certificates is None:
            connection["insecure"] = True
        else:
            connection["root-certificates"] = str(root_certificates.resolve())
        (self.flwr_home / "config.toml").write_text(
            toml_table("superlink", {"default": CONNECTION})
            + "\n"
            + toml_table(f"superlink.{CONNECTION}", connection),
            encoding="utf-8",
        )

    def run(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        """Run ``flwr ARGUMENTS`` and return what it did, whatever its exit code.

        Raises:
            FlowerProcessError: it hung for two minutes.
        """
        try:
            return subprocess.run(
                [str(self.bin_dir / "flwr"), *arguments],
                capture_output=True,
                text=True,
                env=flower_environment(self.bin_dir, self.flwr_home),
                timeout=FLWR_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired as err:
            raise FlowerProcessError(
                f"`flwr {' '.join(arguments)}` hung for {FLWR_TIMEOUT_SECONDS} s."
            ) from err

    def json(self, *arguments: str) -> dict[str, Any]:
        """Run ``flwr ARGUMENTS --format json`` and parse its answer.

        ``flwr`` exits 0 for some refusals and says ``"success": false`` instead; those are
        errors here too.

        Raises:
            FlowerProcessError: the command failed or did not answer JSON.
        """
        done = self.run(*arguments, "--format", "json")
        # Warnings may precede the JSON on stdout; the answer is the last line-opening object.
        start = done.stdout.find("\n{")
        text = done.stdout if done.stdout.startswith("{") else done.stdout[start + 1 :]
        try:
            answer = json.loads(text)
        except json.JSONDecodeError:
            answer = None
        if done.returncode != 0 or not isinstance(answer, dict) or answer.get("success") is False:
            said = answer.get("error-message") if isinstance(answer, dict) else None
            raise FlowerProcessError(
                f"`flwr {' '.join(arguments)}` failed ({done.returncode}): "
                f"{(said or done.stdout + done.stderr).strip()[-800:]}"
            )
        return answer

    def register_supernode(self, public_key: Path, name: str | None = None) -> int:
        """Register a SuperNode's public key (OpenSSH, NIST curve) and return its node id.

        Raises:
            StoreAlreadyRegisteredError: the SuperLink already knows this key.
            FlowerProcessError: the key is unreadable or the SuperLink refused or is down.
        """
        arguments = ["supernode", "register", str(public_key), CONNECTION]
        if name:
            arguments += ["--name", name]
        try:
            answer = self.json(*arguments)
        except FlowerProcessError as err:
            if "already in use" in str(err):
                raise StoreAlreadyRegisteredError(
                    f"the SuperLink already has the public key {public_key} registered; "
                    "nothing to do."
                ) from err
            raise
        return int(answer["node-id"])

    def supernodes(self) -> list[dict[str, Any]]:
        """The SuperNodes the SuperLink knows (``flwr supernode ls``): node-id, status..."""
        nodes = self.json("supernode", "ls", CONNECTION).get("nodes", [])
        return [node for node in nodes if isinstance(node, dict)]
