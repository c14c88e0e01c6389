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

The chain's control plane (``loyalnet store serve``, ``store_node.sync``) needs two more
things, given to a later join once the chain registered the store: its address
(``--control-plane HOST:PORT``, kept in ``store.toml``) and the store's client certificate
(``--certificate``, kept as ``control-plane.crt``), which the chain's CA issued for the store's
own node key. The certificate is checked before anything changes
(``store_node.sync.certificate``); joining again without one keeps the one the store holds, as
long as the CA given still vouches for it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509

from loyalnet.chain_tls import load_private_key
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
from store_node.sync.certificate import check_store_certificate, read_certificate


@dataclass(frozen=True)
class JoinResult:
    """What joining left in the store folder.

    Attributes:
        model_signing_key: the chain's model-signing public key kept in the store folder, or
            None when the store holds none (then it cannot check who made a model).
        model_signing_key_id: that key's id (``loyalnet.model_signing.key_id``), or None.
        control_plane: the chain's control plane as ``host:port``, or "" while it has none.
        control_plane_certificate: the store's control-plane certificate, or None while it
            holds none.
        new_certificate: whether this join installed the certificate (False: kept or none).
    """

    identity: NodeIdentity
    new_identity: bool
    ca_certificate: Path
    superlink: str
    model_signing_key: Path | None = None
    model_signing_key_id: str | None = None
    control_plane: str = ""
    control_plane_certificate: Path | None = None
    new_certificate: bool = False


def join_federation(
    paths: StorePaths,
    ca_file: Path,
    superlink: str,
    model_key_file: Path | None = None,
    *,
    control_plane: str | None = None,
    certificate_file: Path | None = None,
) -> JoinResult:
    """Prepare the store in ``paths`` to connect to the SuperLink at ``superlink``.

    Joining again (a new CA or address) keeps the store's key pair: the chain knows the store
    by its public key. It also never drops a model-signing key the store already holds (that
    would quietly let unsigned models in); a new one given or found replaces it.

    Args:
        model_key_file: the chain's ``model-signing.pub``; None looks for it beside
            ``ca_file``, and joins without one when it is not there.
        control_plane: the chain's control plane as ``host:port``; None keeps the address
            ``store.toml`` holds.
        certificate_file: the store's control-plane certificate from the chain; None keeps the
            one the store holds (checked against ``ca_file``), if any.

    Raises:
        LoyalnetError: not a store folder, a bad address, ``ca_file`` is no CA certificate,
            the model-signing key is unreadable or not an Ed25519 public key, or the
            control-plane certificate is not this store's (see
            ``store_node.sync.certificate.check_store_certificate``). Nothing changed then.
    """
    config = read_config(paths)
    address = checked_superlink_address(superlink)
    plane = (
        config.control_plane
        if control_plane is None
        else checked_address(control_plane, "--control-plane", "the chain's control plane")
    )
    certificate = _ca_certificate_bytes(ca_file)
    model_key = _model_key_bytes(ca_file, model_key_file)
    identity = NodeIdentity(paths.root)
    new_identity = not identity.exists()
    store_certificate = _store_certificate_bytes(
        paths, identity, certificate, config.store_id, certificate_file
    )
    if new_identity:
        identity = create_node_identity(paths.root)
    paths.ca_certificate.write_bytes(certificate)
    if store_certificate is not None:
        paths.control_plane_certificate.write_bytes(store_certificate)
    kept_key: Path | None = None
    kept_id: str | None = None
    if model_key is not None:
        kept_key, kept_id = install_model_signing_key(paths.root, *model_key)
    elif model_signing_key_file(paths.root).exists():
        kept_key = model_signing_key_file(paths.root)
        kept_id = _held_key_id(kept_key)
    write_config(paths, replace(config, superlink=address, control_plane=plane))
    held = paths.control_plane_certificate
    return JoinResult(
        identity,
        new_identity,
        paths.ca_certificate,
        address,
        kept_key,
        kept_id,
        control_plane=plane,
        control_plane_certificate=held if held.is_file() else None,
        new_certificate=store_certificate is not None,
    )


def checked_superlink_address(address: str) -> str:
    """``address`` if it is ``host:port`` (an IPv6 host in brackets).

    Raises:
        LoyalnetError: otherwise.
    """
    return checked_address(address, "--superlink", "the chain's SuperLink")


def checked_address(address: str, option: str, what: str) -> str:
    """``address`` if it is ``host:port`` (an IPv6 host in brackets), for ``option``.

    Raises:
        LoyalnetError: otherwise; the message names ``option`` and ``what`` it should hold.
    """
    host, _, port = address.strip().rpartition(":")
    valid_port = port.isascii() and port.isdigit() and 1 <= int(port) <= 65535
    if not host or not valid_port or any(c.isspace() for c in host) or not host.isprintable():
        raise LoyalnetError(
            f"{option} {address!r} is not HOST:PORT; use {what}'s address, "
            "e.g. coordinator.example.com:8000."
        )
    return f"{host}:{int(port)}"


def _store_certificate_bytes(
    paths: StorePaths,
    identity: NodeIdentity,
    ca_pem: bytes,
    store_id: str,
    certificate_file: Path | None,
) -> bytes | None:
    """The control-plane certificate to install, checked; None when none is to be installed.

    Without ``certificate_file`` the one the store holds is checked against the (possibly new)
    CA, so that a join never leaves a certificate the chain would not accept.
    """
    if certificate_file is None:
        held = paths.control_plane_certificate
        if held.is_file():
            source = f"{held} (the certificate this store holds)"
            check_store_certificate(
                read_certificate(held),
                ca_pem,
                load_private_key(identity.private_key).public_key(),
                store_id,
                source=source,
            )
        return None
    if not identity.exists():
        raise LoyalnetError(
            f"{paths.root} has no node key yet, so no certificate can be issued for it: join "
            "first without --certificate, hand the printed node.pub to the chain "
            "(`loyalnet coordinator register-store`), then join again with --certificate."
        )
    data = read_certificate(certificate_file)
    check_store_certificate(
        data,
        ca_pem,
        load_private_key(identity.private_key).public_key(),
        store_id,
        source=str(certificate_file),
    )
    return data


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
