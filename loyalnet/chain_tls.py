"""Who is on the other end of a control-plane call: client certificates from the chain's CA.

Every caller of the coordinator's control plane (``loyalnet.chain.v1``) shows a certificate the
chain's own CA issued (``coordinator.pki``), over mutual TLS. The certificate alone says who the
caller is; no field of a request ever does:

- subject ``CN``: the caller's name (a store's name in the chain, or a person's);
- subject ``OU``: the role, one of :class:`Role`;
- the public key: for a store, its node key, the one the chain registered when it admitted the
  store; the same key signs its receipts (``loyalnet.receipts``), so a certificate and a receipt
  can never speak for two different stores.

This module holds what both ends need: reading a peer's identity from its certificate, and
building channel credentials from PEM files. It imports nothing of loyalnet but the errors.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from loyalnet.errors import LoyalnetError


class Role(StrEnum):
    """What a certificate lets its holder do on the control plane."""

    STORE = "store"
    """Heartbeat, pull its own commands, acknowledge them: speaks only for itself."""
    ADMIN = "admin"
    """Read everything and act: erasures, promotions, rollbacks, training runs."""
    VIEWER = "viewer"
    """Read everything, act on nothing."""


class ChainTlsError(LoyalnetError):
    """A certificate or key that cannot identify anyone on the chain's control plane."""


@dataclass(frozen=True)
class Peer:
    """The identity a client certificate carries.

    Attributes:
        name: the subject's CN: a store's name, or a person's.
        role: the subject's OU.
        public_key_sha256: hex sha256 of the certificate's public key (DER
            SubjectPublicKeyInfo); ties the certificate to a registered store key.
    """

    name: str
    role: Role
    public_key_sha256: str

    @property
    def actor(self) -> str:
        """How the audit log names this caller, e.g. ``store:store-12`` or ``admin:ana``."""
        return f"{self.role.value}:{self.name}"


def peer_from_certificate(pem: bytes) -> Peer:
    """The :class:`Peer` a PEM certificate names (its chain was checked by TLS already).

    Raises:
        ChainTlsError: not a certificate, or no single CN, or an OU that is no :class:`Role`.
    """
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError as err:
        raise ChainTlsError(f"not a PEM certificate ({err}).") from err
    subject = certificate.subject
    names = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    units = subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if len(names) != 1 or len(units) != 1:
        raise ChainTlsError(
            f"certificate {subject.rfc4514_string()} needs exactly one CN and one OU (the role); "
            "it was not issued for the control plane."
        )
    try:
        role = Role(str(units[0].value))
    except ValueError as err:
        raise ChainTlsError(
            f"certificate {subject.rfc4514_string()} has role {units[0].value!r}; the control "
            f"plane knows {', '.join(role.value for role in Role)}."
        ) from err
    return Peer(str(names[0].value), role, public_key_sha256(certificate.public_key()))


def public_key_sha256(key: object) -> str:
    """Hex sha256 of a public key's DER SubjectPublicKeyInfo."""
    if not hasattr(key, "public_bytes"):
        raise ChainTlsError(f"{type(key).__name__} is not a public key.")
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """An ECDSA private key from a PEM (PKCS#8 or traditional) or OpenSSH file.

    A store's node key is in OpenSSH format (what Flower's SuperNode reads); people's keys are
    PKCS#8. Both work here.

    Raises:
        ChainTlsError: unreadable, or not an unencrypted elliptic-curve key.
    """
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ChainTlsError(f"cannot read the private key {path}: {err}.") from err
    key: object
    try:
        if data.lstrip().startswith(b"-----BEGIN OPENSSH PRIVATE KEY"):
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as err:
        raise ChainTlsError(f"{path} is not an unencrypted private key ({err}).") from err
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ChainTlsError(f"{path} holds a {type(key).__name__}; an ECDSA key is wanted.")
    return key


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """``key`` as unencrypted PKCS#8 PEM, the form gRPC's TLS reads."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class ClientIdentity:
    """What a client needs to call the control plane: the chain's CA, its certificate, its key.

    The key is held in memory as PKCS#8 PEM; it is never written anywhere by this class.
    """

    ca_pem: bytes
    certificate_pem: bytes
    private_key_pem: bytes

    @classmethod
    def from_files(cls, ca: Path, certificate: Path, private_key: Path) -> ClientIdentity:
        """Read the three files, checking that the certificate belongs to the key.

        Raises:
            ChainTlsError: a file is unreadable, or the certificate was issued for another key.
        """
        key = load_private_key(private_key)
        try:
            ca_pem = ca.read_bytes()
            certificate_pem = certificate.read_bytes()
        except OSError as err:
            raise ChainTlsError(f"cannot read {err.filename}: {err.strerror}.") from err
        try:
            issued = x509.load_pem_x509_certificate(certificate_pem)
        except ValueError as err:
            raise ChainTlsError(f"{certificate} is not a PEM certificate ({err}).") from err
        if public_key_sha256(issued.public_key()) != public_key_sha256(key.public_key()):
            raise ChainTlsError(
                f"{certificate} was issued for another key than {private_key}; ask the chain "
                "for a certificate of this key."
            )
        return cls(ca_pem, certificate_pem, private_key_pem(key))

    @property
    def peer(self) -> Peer:
        """Who this identity speaks as."""
        return peer_from_certificate(self.certificate_pem)

    def credentials(self) -> grpc.ChannelCredentials:
        """gRPC channel credentials: trust only the chain's CA, present this certificate."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem,
            private_key=self.private_key_pem,
            certificate_chain=self.certificate_pem,
        )


def peer_of(context: grpc.ServicerContext) -> Peer | None:
    """The verified client certificate's identity of a server-side call, or None without one."""
    chain = context.auth_context().get("x509_pem_cert")
    if not chain:
        return None
    # gRPC hands the property as a list of values; the first is the leaf certificate.
    first = chain if isinstance(chain, bytes) else next(iter(chain))
    return peer_from_certificate(first)
