"""The coordinator's CA and SuperLink certificate, and a store's SuperNode key pair."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from coordinator.pki import create_coordinator_tls
from loyalnet.errors import LoyalnetError
from store_node.node_identity import create_node_identity


def test_coordinator_tls_files_and_trust_chain(tmp_path: Path) -> None:
    tls = create_coordinator_tls(
        tmp_path / "tls", "acme", hosts=("localhost", "127.0.0.1", "hq.acme")
    )
    assert tls.exists()
    assert tls.ca_key.stat().st_mode & 0o777 == 0o600
    assert tls.server_key.stat().st_mode & 0o777 == 0o600

    ca = x509.load_pem_x509_certificate(tls.ca_certificate.read_bytes())
    server = x509.load_pem_x509_certificate(tls.server_certificate.read_bytes())
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "hq.acme"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    server_key = serialization.load_pem_private_key(tls.server_key.read_bytes(), password=None)
    assert server_key.public_key() == server.public_key()

    with pytest.raises(LoyalnetError, match="already holds certificates"):
        create_coordinator_tls(tmp_path / "tls", "acme")


def test_node_identity_is_openssh_p384(tmp_path: Path) -> None:
    identity = create_node_identity(tmp_path)
    assert identity.private_key.stat().st_mode & 0o777 == 0o600
    private = serialization.load_ssh_private_key(identity.private_key.read_bytes(), password=None)
    public = serialization.load_ssh_public_key(identity.public_key.read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert isinstance(private.curve, ec.SECP384R1)
    assert private.public_key() == public
    with pytest.raises(LoyalnetError, match="already has a node key"):
        create_node_identity(tmp_path)
