"""The store's control-plane certificate: checked before it is kept, and again before each start.

The chain's coordinator issues a store a client certificate (``loyalnet coordinator
register-store``) for the store's own node key: the store never hands out its private key, so
the certificate is worth nothing to anyone else. The control plane knows the store only by it
(``loyalnet.chain_tls``). A certificate that was issued by another chain, for another key or
under another name would connect as someone else, or not at all, so the store checks it before
the store folder changes and tells the person joining which file to fetch instead.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from loyalnet.chain_tls import ChainTlsError, Role, peer_from_certificate, public_key_sha256
from loyalnet.errors import LoyalnetError

REGISTER_HINT = (
    "ask the chain's admin for this store's certificate (`loyalnet coordinator register-store` "
    "writes stores/<name>.crt) and join with `--certificate` that file"
)


def check_store_certificate(
    certificate_pem: bytes,
    ca_pem: bytes,
    node_key: ec.EllipticCurvePublicKey,
    store_id: str,
    *,
    source: str,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """The certificate in ``certificate_pem`` if it is this store's control-plane certificate.

    It must be PEM, signed by the CA in ``ca_pem``, valid at ``now``, for ``node_key`` (the
    public half of the store's ``node_key``), with CN ``store_id`` and OU ``store``.

    Args:
        source: how messages name the certificate (its file).

    Raises:
        LoyalnetError: any check fails; the message says which and what to do.
    """
    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem)
    except ValueError as err:
        raise LoyalnetError(f"{source} is not a PEM certificate; {REGISTER_HINT}.") from err
    try:
        ca = x509.load_pem_x509_certificate(ca_pem)
    except ValueError as err:
        raise LoyalnetError("the chain's CA certificate is not PEM; join with its ca.crt.") from err
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as err:
        raise LoyalnetError(
            f"{source} was not issued by the chain's CA ({ca.subject.rfc4514_string()}): it "
            f"belongs to another chain, or the CA given is not this chain's; {REGISTER_HINT}."
        ) from err
    instant = now if now is not None else dt.datetime.now(dt.UTC)
    if not certificate.not_valid_before_utc <= instant <= certificate.not_valid_after_utc:
        raise LoyalnetError(
            f"{source} is valid only from {certificate.not_valid_before_utc:%Y-%m-%d} to "
            f"{certificate.not_valid_after_utc:%Y-%m-%d}; {REGISTER_HINT} (a new one)."
        )
    if public_key_sha256(certificate.public_key()) != public_key_sha256(node_key):
        raise LoyalnetError(
            f"{source} was issued for another key than this store's node_key; the chain must "
            f"register this store's node.pub: {REGISTER_HINT}."
        )
    try:
        peer = peer_from_certificate(certificate_pem)
    except ChainTlsError as err:
        raise LoyalnetError(f"{source}: {err} {REGISTER_HINT}.") from err
    if peer.role is not Role.STORE:
        raise LoyalnetError(
            f"{source} is a certificate for a person (role {peer.role.value}), not for a store; "
            f"{REGISTER_HINT}."
        )
    if peer.name != store_id:
        raise LoyalnetError(
            f"{source} names the store {peer.name!r}, but this store is {store_id!r} "
            "(store_id in store.toml); use this store's own certificate, or register the store "
            f"under {store_id!r}."
        )
    return certificate


def read_certificate(path: Path) -> bytes:
    """The bytes of a certificate file.

    Raises:
        LoyalnetError: the file cannot be read.
    """
    try:
        return path.read_bytes()
    except OSError as err:
        raise LoyalnetError(
            f"cannot read the certificate {path} ({err.strerror}); {REGISTER_HINT}."
        ) from err
