"""The coordinator's certificates: a private certificate authority and the SuperLink's TLS cert.

Stores reach the SuperLink over TLS and trust it through the chain's own CA, whose certificate
each store receives when it joins (``ca.crt``: public). The CA key signs only the SuperLink's
certificate and stays in the coordinator folder (mode 0600). Keys are ECDSA P-384, the curve
Flower's SuperNode authentication uses as well.

Files written into the coordinator's ``tls/`` folder:

| file | what | mode |
| --- | --- | --- |
| ``ca.crt`` | CA certificate, handed to every store | 0644 |
| ``ca.key`` | CA private key | 0600 |
| ``server.pem`` | SuperLink certificate, SAN ``localhost``, ``127.0.0.1`` and extra hosts | 0644 |
| ``server.key`` | SuperLink private key | 0600 |
| ``model-signing.key`` | Ed25519 key that signs every saved model version | 0600 |
| ``model-signing.pub`` | its public key, handed to every store with ``ca.crt`` | 0644 |
| ``admin.crt``, ``admin.key`` | the first admin's control-plane certificate and key | 0644, 0600 |

The CA also issues the control plane's client certificates (``loyalnet.chain_tls``): a store's
(CN its name, OU ``store``) for the store's own node key when the chain admits it, and a
person's (OU ``admin`` or ``viewer``) with a key made here. A store's certificate is revoked by
revoking the store in the coordinator's registry: the control plane checks, on every call, that
the certificate's key is the one registered for that name and that the store is not revoked,
so no certificate revocation list has to reach anyone.

The model-signing key is separate from the CA: it signs model manifests
(``loyalnet.model_signing``), a different job from vouching for the SuperLink, and a store
checks it offline when it adopts a model, long after any TLS connection has closed. Its public
key sits beside ``ca.crt`` so that ``loyalnet store join --ca tls/ca.crt`` finds it there.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from loyalnet.chain_tls import Role
from loyalnet.errors import LoyalnetError
from loyalnet.model_signing import (
    MODEL_SIGNING_PUBLIC_KEY,
    private_key_pem,
    public_key_pem,
    read_private_key,
)
from loyalnet.secret_files import write_secret_file

CA_VALIDITY = dt.timedelta(days=3650)
SERVER_VALIDITY = dt.timedelta(days=825)
DEFAULT_HOSTS = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class CoordinatorTls:
    """Paths of the coordinator's TLS material."""

    folder: Path

    @property
    def ca_certificate(self) -> Path:
        return self.folder / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca.key"

    @property
    def server_certificate(self) -> Path:
        return self.folder / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.folder / "server.key"

    @property
    def model_signing_key(self) -> Path:
        """The Ed25519 key that signs model versions (0600; never leaves the coordinator)."""
        return self.folder / "model-signing.key"

    @property
    def admin_certificate(self) -> Path:
        """The control-plane client certificate ``coordinator init`` makes for the first admin."""
        return self.folder / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.folder / "admin.key"

    @property
    def model_signing_public_key(self) -> Path:
        """Its public key, which stores check model versions with."""
        return self.folder / MODEL_SIGNING_PUBLIC_KEY

    def exists(self) -> bool:
        """True when every file is there."""
        return all(
            path.is_file()
            for path in (self.ca_certificate, self.ca_key, self.server_certificate, self.server_key)
        )


def create_coordinator_tls(
    folder: Path, chain_name: str, hosts: Sequence[str] = DEFAULT_HOSTS
) -> CoordinatorTls:
    """Create a CA and a SuperLink certificate valid for ``hosts`` (names or IP addresses).

    Raises:
        LoyalnetError: when the folder already holds TLS material.
    """
    tls = CoordinatorTls(folder)
    if any(
        p.exists()
        for p in (
            tls.ca_certificate,
            tls.ca_key,
            tls.server_certificate,
            tls.server_key,
            tls.model_signing_key,
            tls.model_signing_public_key,
        )
    ):
        raise LoyalnetError(
            f"{folder} already holds certificates; refusing to replace them, since every "
            "store trusts the current CA. Move the folder away to start a new chain."
        )
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{chain_name} loyalnet CA")])
    ca_certificate = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA384())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_certificate = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{chain_name} SuperLink")])
        )
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + SERVER_VALIDITY)
        .add_extension(
            x509.SubjectAlternativeName([_general_name(h) for h in hosts]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    write_secret_file(tls.ca_key, _private_pem(ca_key))
    write_secret_file(tls.server_key, _private_pem(server_key))
    tls.ca_certificate.write_bytes(ca_certificate.public_bytes(serialization.Encoding.PEM))
    tls.server_certificate.write_bytes(server_certificate.public_bytes(serialization.Encoding.PEM))
    create_model_signing_key(tls)
    issue_person_certificate(tls, "admin", Role.ADMIN, tls.admin_certificate, tls.admin_key)
    return tls


def issue_store_certificate(
    tls: CoordinatorTls, name: str, public_key: ec.EllipticCurvePublicKey
) -> bytes:
    """A control-plane client certificate (PEM) for store ``name``'s own node key.

    The store keeps its private key; the chain only ever sees the public half (``node.pub``).
    """
    return _client_certificate(tls, name, Role.STORE, public_key)


def issue_person_certificate(
    tls: CoordinatorTls, name: str, role: Role, certificate_path: Path, key_path: Path
) -> None:
    """Make a key pair and a control-plane certificate for a person (an admin or a viewer).

    Raises:
        LoyalnetError: ``role`` is not a person's, or one of the files exists already.
    """
    if role is Role.STORE:
        raise LoyalnetError("a store's certificate is issued for its own key: register the store.")
    if certificate_path.exists() or key_path.exists():
        raise LoyalnetError(
            f"{certificate_path} or {key_path} exists already; choose other file names."
        )
    key = ec.generate_private_key(ec.SECP384R1())
    write_secret_file(key_path, _private_pem(key))
    certificate_path.write_bytes(_client_certificate(tls, name, role, key.public_key()))


def _client_certificate(
    tls: CoordinatorTls, name: str, role: Role, public_key: ec.EllipticCurvePublicKey
) -> bytes:
    ca_key = _read_ca_key(tls)
    ca_certificate = x509.load_pem_x509_certificate(tls.ca_certificate.read_bytes())
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role.value),
                    x509.NameAttribute(NameOID.COMMON_NAME, name),
                ]
            )
        )
        .issuer_name(ca_certificate.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + SERVER_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def _read_ca_key(tls: CoordinatorTls) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(tls.ca_key.read_bytes(), password=None)
    except (OSError, ValueError) as err:
        raise LoyalnetError(
            f"cannot read the chain's CA key {tls.ca_key} ({err}); certificates are issued on "
            "the coordinator, in its folder."
        ) from err
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise LoyalnetError(f"{tls.ca_key} is not the chain's ECDSA CA key.")
    return key


def create_model_signing_key(tls: CoordinatorTls) -> Path:
    """Make the chain's model-signing key pair in ``tls``'s folder; return the public key's path.

    Called by :func:`create_coordinator_tls`; call it alone only for a chain created before
    models were signed, then hand the public key to every store (``loyalnet store join``).

    Raises:
        LoyalnetError: a model-signing key exists already (stores may trust it).
    """
    if tls.model_signing_key.exists() or tls.model_signing_public_key.exists():
        raise LoyalnetError(
            f"{tls.folder} already holds a model-signing key; refusing to replace it, since "
            "stores adopt only models it signed. Move it away first to start over."
        )
    tls.folder.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    write_secret_file(tls.model_signing_key, private_key_pem(key))
    tls.model_signing_public_key.write_bytes(public_key_pem(key.public_key()))
    return tls.model_signing_public_key


def load_model_signing_key(tls: CoordinatorTls) -> Ed25519PrivateKey | None:
    """The chain's model-signing key, or None for a chain created before models were signed.

    Raises:
        ModelSignatureError: the key file exists but is unreadable or no Ed25519 key.
    """
    if not tls.model_signing_key.exists():
        return None
    return read_private_key(tls.model_signing_key)


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
