"""A store joining the chain's federation: its SuperNode key, the chain's CA, the SuperLink.

After :func:`join_federation` the store folder holds everything its SuperNode needs to reach
the coordinator over TLS and authenticate: ``node_key`` (0600) and ``node.pub``
(``store_node.node_identity``), ``ca.crt`` (the chain's CA certificate, public) and the
SuperLink's address in ``store.toml``. The chain admits the store by registering ``node.pub``
(``loyalnet coordinator register-store``); until then its SuperNode is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509

from loyalnet.errors import LoyalnetError
from store_node.config import StorePaths, read_config, write_config
from store_node.node_identity import NodeIdentity, create_node_identity


@dataclass(frozen=True)
class JoinResult:
    """What joining left in the store folder."""

    identity: NodeIdentity
    new_identity: bool
    ca_certificate: Path
    superlink: str


def join_federation(paths: StorePaths, ca_file: Path, superlink: str) -> JoinResult:
    """Prepare the store in ``paths`` to connect to the SuperLink at ``superlink``.

    Joining again (a new CA or address) keeps the store's key pair: the chain knows the store
    by its public key.

    Raises:
        LoyalnetError: not a store folder, a bad address, or ``ca_file`` is no CA certificate.
    """
    config = read_config(paths)
    address = checked_superlink_address(superlink)
    certificate = _ca_certificate_bytes(ca_file)
    identity = NodeIdentity(paths.root)
    new_identity = not identity.exists()
    if new_identity:
        identity = create_node_identity(paths.root)
    paths.ca_certificate.write_bytes(certificate)
    write_config(paths, replace(config, superlink=address))
    return JoinResult(identity, new_identity, paths.ca_certificate, address)


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
