"""A store joining the chain's federation: its SuperNode key, the chain's CA, the SuperLink.

After :func:`join_federation` the store folder holds everything its SuperNode needs to reach
the coordinator over TLS and authenticate: ``node_key`` (0600) and ``node.pub``
(``store_node.node_identity``), ``ca.crt`` (the chain's CA certificate, public), the
SuperLink's address in ``store.toml``, and ``model-signing.pub``, the chain's model-signing
public key, when the chain has one: from then on the store adopts only models whose manifest
that key signed (``store_node.model_check``). The key is taken from ``--model-key``, or else
from beside the CA certificate (the coordinator keeps both in its ``tls/`` folder), so a
``store join --ca tls/ca.crt`` picks it up without a new option; a chain without one joins as
before. The chain admits the store by registering ``node.pub``
(``loyalnet coordinator register-store``); until then its SuperNode is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509

from loyalnet.errors import LoyalnetError
from loyalnet.model_signing import (
    MODEL_SIGNING_PUBLIC_KEY,
    key_id,
    parse_public_key,
    read_public_key,
)
from store_node.config import StorePaths, read_config, write_config
from store_node.model_check import install_model_signing_key, model_signing_key_file
from store_node.node_identity import NodeIdentity, create_node_identity


@dataclass(frozen=True)
class JoinResult:
    """What joining left in the store folder.

    Attributes:
        model_signing_key: the chain's model-signing public key kept in the store folder, or
            None when the store holds none (then it cannot check who made a model).
        model_signing_key_id: that key's id (``loyalnet.model_signing.key_id``), or None.
    """

    identity: NodeIdentity
    new_identity: bool
    ca_certificate: Path
    superlink: str
    model_signing_key: Path | None = None
    model_signing_key_id: str | None = None


def join_federation(
    paths: StorePaths, ca_file: Path, superlink: str, model_key_file: Path | None = None
) -> JoinResult:
    """Prepare the store in ``paths`` to connect to the SuperLink at ``superlink``.

    Joining again (a new CA or address) keeps the store's key pair: the chain knows the store
    by its public key. It also never drops a model-signing key the store already holds (that
    would quietly let unsigned models in); a new one given or found replaces it.

    Args:
        model_key_file: the chain's ``model-signing.pub``; None looks for it beside
            ``ca_file``, and joins without one when it is not there.

    Raises:
        LoyalnetError: not a store folder, a bad address, ``ca_file`` is no CA certificate,
            or the model-signing key is unreadable or not an Ed25519 public key.
    """
    config = read_config(paths)
    address = checked_superlink_address(superlink)
    certificate = _ca_certificate_bytes(ca_file)
    model_key = _model_key_bytes(ca_file, model_key_file)
    identity = NodeIdentity(paths.root)
    new_identity = not identity.exists()
    if new_identity:
        identity = create_node_identity(paths.root)
    paths.ca_certificate.write_bytes(certificate)
    kept_key: Path | None = None
    kept_id: str | None = None
    if model_key is not None:
        kept_key, kept_id = install_model_signing_key(paths.root, *model_key)
    elif model_signing_key_file(paths.root).exists():
        kept_key = model_signing_key_file(paths.root)
        kept_id = _held_key_id(kept_key)
    write_config(paths, replace(config, superlink=address))
    return JoinResult(identity, new_identity, paths.ca_certificate, address, kept_key, kept_id)


def checked_superlink_address(address: str) -> str:
    """``address`` if it is ``host:port`` (an IPv6 host in brackets).

    Raises:
        LoyalnetError: otherwise.
    """
    host, _, port = address.strip().rpartition(":")
    valid_port = port.isdigit() and 1 <= int(port) <= 65535
    if not host or not valid_port or any(c.isspace() for c in host):
        raise LoyalnetError(
            f"--superlink {address!r} is not HOST:PORT; use the chain's SuperLink address, "
            "e.g. coordinator.example.com:8000."
        )
    return f"{host}:{int(port)}"


def _model_key_bytes(ca_file: Path, model_key_file: Path | None) -> tuple[bytes, str] | None:
    """The model-signing public key's bytes and where they came from, or None without one."""
    path = (
        model_key_file if model_key_file is not None else ca_file.parent / MODEL_SIGNING_PUBLIC_KEY
    )
    if model_key_file is None and not path.is_file():
        return None
    try:
        data = path.read_bytes()
    except OSError as err:
        raise LoyalnetError(
            f"cannot read the model-signing key {path}: {err}; use the model-signing.pub "
            "from the coordinator's tls/ folder."
        ) from err
    parse_public_key(data, str(path))  # refuse a bad key before the folder changes
    return data, str(path)


def _held_key_id(path: Path) -> str:
    """The id of the model-signing key a store already holds (checked: it must stay usable)."""
    return key_id(read_public_key(path))


def _ca_certificate_bytes(path: Path) -> bytes:
    """The PEM bytes of a CA certificate file."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise LoyalnetError(f"cannot read the CA certificate {path}: {err}.") from err
    try:
        certificate = x509.load_pem_x509_certificate(data)
    except ValueError as err:
        raise LoyalnetError(
            f"{path} is not a PEM certificate; use the ca.crt the chain's coordinator gave you."
        ) from err
    try:
        is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise LoyalnetError(
            f"{path} is not a CA certificate (perhaps the SuperLink's own); use the ca.crt "
            "from the coordinator's tls/ folder."
        )
    return data
