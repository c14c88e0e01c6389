"""A store's folder and its settings file, ``store.toml``.

A store folder holds everything a store node keeps:

- ``gallery.db``: the SQLite gallery (members, consents, sealed templates and crops, audit);
- ``store.key``: the store's 256-bit AES key, mode 0600; without it the gallery is unreadable;
- ``store.toml``: the settings below, plain text, no secrets;
- once the store joined the chain's federation (``loyalnet store join``): ``node_key`` (its
  SuperNode's private key, mode 0600), ``node.pub`` (the public key the chain registers) and
  ``ca.crt`` (the chain's CA certificate, which the SuperLink's TLS certificate is checked by).
"""

from __future__ import annotations

import tomllib
import uuid
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from loyalnet.errors import LoyalnetError

CONFIG_NAME = "store.toml"
DATABASE_NAME = "gallery.db"
KEY_NAME = "store.key"
CA_CERTIFICATE_NAME = "ca.crt"


@dataclass(frozen=True)
class StoreConfig:
    """Settings of one store.

    Attributes:
        store_id: the chain's name for this store; never a member's data.
        target_fpir: false-positive identification rate the decision threshold is set for:
            the share of searches by people who are not members that would wrongly return a
            member, in [1e-6, 0.5]. 0.001 means one stranger in a thousand.
        policy_version: the consent policy text members agree to at enrolment.
        retention_days: how long a consent (and so the member's templates) stays valid.
        flip: average each face's embedding with its mirror image's; off by default, as on
            LFW it changed accuracy by 0.02 points at twice the embedding cost.
        superlink: the chain's SuperLink as ``host:port``, set by ``loyalnet store join``;
            empty while the store has not joined.
    """

    store_id: str
    target_fpir: float = 0.001
    policy_version: str = "2026-11"
    retention_days: int = 365
    flip: bool = False
    superlink: str = ""

    def __post_init__(self) -> None:
        if not 1e-6 <= self.target_fpir <= 0.5:
            raise LoyalnetError(
                f"target_fpir must be in [1e-6, 0.5], got {self.target_fpir}; "
                f"0.001 (one stranger in a thousand) is the default."
            )
        if self.retention_days < 1:
            raise LoyalnetError(f"retention_days must be >= 1, got {self.retention_days}.")


@dataclass(frozen=True)
class StorePaths:
    """The files of one store folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def database(self) -> Path:
        return self.root / DATABASE_NAME

    @property
    def key(self) -> Path:
        return self.root / KEY_NAME

    @property
    def ca_certificate(self) -> Path:
        """The chain's CA certificate, copied in by ``loyalnet store join``."""
        return self.root / CA_CERTIFICATE_NAME


def new_store_id() -> str:
    """A short random store id, used when the chain has not named the store."""
    return f"store-{uuid.uuid4().hex[:8]}"


def write_config(paths: StorePaths, config: StoreConfig) -> None:
    """Write ``store.toml``; values are plain strings, numbers and booleans."""
    lines = ["# loyalnet store settings; see `loyalnet store init --help`."]
    for name, value in asdict(config).items():
        lines.append(f"{name} = {_toml_value(value)}")
    paths.config.write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_config(paths: StorePaths) -> StoreConfig:
    """Read ``store.toml`` of an initialised store.

    Raises:
        LoyalnetError: when the folder is not a store or the file is broken.
    """
    if not paths.config.is_file():
        raise LoyalnetError(
            f"{paths.root} is not a store folder (no {CONFIG_NAME}); "
            f"create one with `loyalnet store init --store {paths.root}`."
        )
    try:
        values = tomllib.loads(paths.config.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise LoyalnetError(f"{paths.config} is not valid TOML ({err}); fix the file.") from err
    known = {field.name for field in fields(StoreConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise LoyalnetError(
            f"{paths.config} has unknown settings {', '.join(unknown)}; "
            f"valid ones are {', '.join(sorted(known))}."
        )
    try:
        return StoreConfig(**values)
    except TypeError as err:
        raise LoyalnetError(f"{paths.config} is incomplete or mistyped ({err}).") from err


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
