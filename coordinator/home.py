"""The coordinator's folder: its TLS material, the stores it admits, and its settings.

``loyalnet coordinator init`` creates it::

    coordinator-home/
      coordinator.toml   chain name, ports, certificate hosts, database URL (no secrets)
      coordinator.db     the registry (SQLite default): stores, commands, receipts, model
                         versions, runs, erasures, audit log (coordinator.registry)
      tls/               CA and SuperLink certificate and keys, and the model-signing key
                         pair that signs every model version (coordinator.pki; keys 0600)
      stores/<name>.pub  each admitted store's SuperNode public key (OpenSSH, public)
      stores/<name>.crt  its control-plane certificate, issued for that key (public)
      models/            model versions written by training runs (coordinator.model_versions)
      flower/            the SuperLink's database, logs and FLWR_HOME (LocalFederation)

A store's public key is copied into ``stores/`` when the chain admits it; registering it
with a running SuperLink (``flwr supernode register``) is what lets the store's SuperNode in.
Registrations live in the SuperLink's database, ``flower/superlink.db``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from coordinator.errors import CoordinatorError
from coordinator.pki import DEFAULT_HOSTS, CoordinatorTls, create_coordinator_tls
from coordinator.processes import LocalFederation
from coordinator.toml_text import toml_table, toml_value

CONFIG_NAME = "coordinator.toml"
DEFAULT_SUPERLINK_PORT = 8000
"""The SuperLink's port (Fleet, Control and runtime APIs) unless ``init --port`` says
otherwise; Flower's own default."""
DEFAULT_CONTROL_PORT = 8100
"""The control plane's port (``loyalnet.chain.v1``) unless ``init --control-port`` says
otherwise."""
DEFAULT_HEARTBEAT_SECONDS = 10
_STORE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


class CoordinatorHomeError(CoordinatorError):
    """The coordinator folder is missing or broken, or a store's key cannot be taken in."""


@dataclass(frozen=True)
class CoordinatorConfig:
    """``coordinator.toml``: the chain's name, ports, the certificate's hosts, the database.

    Attributes:
        control_port: the control plane's port (stores' sync, admins' console and CLI).
        heartbeat_seconds: how often stores are asked to heartbeat, 1 to 3600.
        database: the registry's SQLAlchemy URL; empty means ``coordinator.db`` in the folder
            (e.g. ``postgresql+psycopg://user:password@host/loyalnet`` for PostgreSQL).
    """

    chain: str
    superlink_port: int = DEFAULT_SUPERLINK_PORT
    hosts: tuple[str, ...] = DEFAULT_HOSTS
    control_port: int = DEFAULT_CONTROL_PORT
    heartbeat_seconds: int = DEFAULT_HEARTBEAT_SECONDS
    database: str = ""


@dataclass(frozen=True)
class CoordinatorHome:
    """The paths of a coordinator folder; see the module docstring."""

    folder: Path

    @property
    def config_path(self) -> Path:
        return self.folder / CONFIG_NAME

    @property
    def tls(self) -> CoordinatorTls:
        return CoordinatorTls(self.folder / "tls")

    @property
    def stores(self) -> Path:
        """The admitted stores' public keys, ``<name>.pub``."""
        return self.folder / "stores"

    @property
    def models_dir(self) -> Path:
        """The model versions training runs write (``coordinator.model_versions``)."""
        return self.folder / "models"

    def database_url(self, override: str | None = None) -> str:
        """The registry's URL: ``override``, else ``coordinator.toml``'s, else the SQLite file."""
        if override:
            return override
        configured = self.read_config().database
        return configured or f"sqlite:///{(self.folder / 'coordinator.db').resolve()}"

    def store_certificate(self, name: str) -> Path:
        """Where the control-plane certificate issued to store ``name`` is kept."""
        return self.stores / f"{_checked_store_name(name)}.crt"

    @property
    def flower_dir(self) -> Path:
        """The working folder of the coordinator's :class:`LocalFederation`."""
        return self.folder / "flower"

    def store_key(self, name: str) -> Path:
        """Where the public key of store ``name`` is kept."""
        return self.stores / f"{_checked_store_name(name)}.pub"

    def store_keys(self) -> dict[str, Path]:
        """Every admitted store's public key, by store name."""
        return {path.stem: path for path in sorted(self.stores.glob("*.pub"))}

    def read_config(self) -> CoordinatorConfig:
        """Read ``coordinator.toml``.

        Raises:
            CoordinatorHomeError: the folder was never initialised, or the file is broken.
        """
        if not self.config_path.is_file() or not self.tls.exists():
            raise CoordinatorHomeError(
                f"{self.folder} is not a coordinator folder (no {CONFIG_NAME} or tls/); "
                f"create one with `loyalnet coordinator init --dir {self.folder}`."
            )
        try:
            values = tomllib.loads(self.config_path.read_text(encoding="utf-8"))
            return CoordinatorConfig(
                chain=str(values["chain"]),
                superlink_port=int(values["superlink_port"]),
                hosts=tuple(str(host) for host in values.get("hosts", DEFAULT_HOSTS)),
                control_port=int(values.get("control_port", DEFAULT_CONTROL_PORT)),
                heartbeat_seconds=int(values.get("heartbeat_seconds", DEFAULT_HEARTBEAT_SECONDS)),
                database=str(values.get("database", "")),
            )
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, KeyError, ValueError) as err:
            raise CoordinatorHomeError(
                f"{self.config_path} is broken ({err}); it needs chain and superlink_port."
            ) from err

    def local_federation(self, *, insecure: bool = False) -> LocalFederation:
        """A :class:`LocalFederation` serving this coordinator's certificates on its port."""
        port = self.read_config().superlink_port
        if insecure:
            return LocalFederation(self.flower_dir, insecure=True, superlink_port=port)
        return LocalFederation(self.flower_dir, tls=self.tls, superlink_port=port)

    def admit_store(self, name: str, public_key: Path) -> tuple[Path, bool]:
        """Copy a store's SuperNode public key to ``stores/<name>.pub``.

        Returns:
            the kept copy, and whether it is new (False: the same key was there already).

        Raises:
            CoordinatorHomeError: a bad name, a file that is no EC public key in OpenSSH
                format, or another key already kept under that name.
        """
        self.read_config()
        target = self.store_key(name)
        text = _read_public_key(public_key)
        if target.exists():
            if target.read_text(encoding="utf-8").split()[:2] == text.split()[:2]:
                return target, False
            raise CoordinatorHomeError(
                f"store {name!r} already has a different key ({target}); to replace it, "
                "unregister the old node (`flwr supernode unregister`) and delete that file."
            )
        self.stores.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        return target, True


def create_coordinator_home(
    folder: Path,
    chain: str,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    superlink_port: int = DEFAULT_SUPERLINK_PORT,
    control_port: int = DEFAULT_CONTROL_PORT,
    heartbeat_seconds: int = DEFAULT_HEARTBEAT_SECONDS,
) -> CoordinatorHome:
    """Create the coordinator folder: certificates for ``hosts``, ``stores/``, the settings.

    Raises:
        CoordinatorHomeError: it exists already (its CA is what every store trusts).
        LoyalnetError: the certificates could not be made.
    """
    home = CoordinatorHome(folder)
    if home.config_path.exists() or home.tls.folder.exists():
        raise CoordinatorHomeError(
            f"{folder} already holds a coordinator; every store trusts its CA, so it is kept. "
            "Choose another --dir to start a new chain."
        )
    if not chain.strip():
        raise CoordinatorHomeError("the chain name is empty; pass --chain NAME.")
    if not 1 <= superlink_port <= 65535:
        raise CoordinatorHomeError(f"--port must be in 1..65535, got {superlink_port}.")
    if not 1 <= control_port <= 65535 or control_port == superlink_port:
        raise CoordinatorHomeError(
            f"--control-port must be in 1..65535 and differ from --port, got {control_port}."
        )
    if not 1 <= heartbeat_seconds <= 3600:
        raise CoordinatorHomeError(
            f"--heartbeat-seconds must be in 1..3600, got {heartbeat_seconds}."
        )
    hosts = tuple(dict.fromkeys([*DEFAULT_HOSTS, *hosts]))
    create_coordinator_tls(home.tls.folder, chain, hosts)
    home.stores.mkdir(parents=True, exist_ok=True)
    home.config_path.write_text(
        "# loyalnet coordinator settings; see `loyalnet coordinator init --help`.\n"
        + toml_table(
            None,
            {
                "chain": chain,
                "superlink_port": superlink_port,
                "control_port": control_port,
                "heartbeat_seconds": heartbeat_seconds,
            },
        )
        + "hosts = ["
        + ", ".join(toml_value(host) for host in hosts)
        + "]\n",
        encoding="utf-8",
    )
    return home


def _checked_store_name(name: str) -> str:
    if not _STORE_NAME.match(name):
        raise CoordinatorHomeError(
            f"store name {name!r} is not allowed; use letters, digits, '-' and '_' "
            "(at most 63, starting with a letter or digit)."
        )
    return name


def _read_public_key(path: Path) -> str:
    """The OpenSSH text of an EC public key file, checked as Flower will check it."""
    try:
        data = path.read_bytes()
        key = serialization.load_ssh_public_key(data)
    except OSError as err:
        raise CoordinatorHomeError(f"cannot read the public key {path}: {err}.") from err
    except (ValueError, UnsupportedAlgorithm) as err:
        raise CoordinatorHomeError(
            f"{path} is not an OpenSSH public key ({err}); the store's node.pub is wanted."
        ) from err
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CoordinatorHomeError(
            f"{path} is a {type(key).__name__}; stores authenticate with an ECDSA key "
            "(node.pub from `loyalnet store join`)."
        )
    return data.decode("ascii").strip() + "\n"
