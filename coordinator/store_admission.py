"""Admitting a store to the control plane: its certificate, and its row in the registry.

``loyalnet coordinator register-store`` and the demo both go through here. The chain's CA
issues the store's control-plane certificate for the store's own node key (the one its
SuperNode authenticates with, ``node.pub``), so the private key never leaves the store; the
registry keeps that public key, which later verifies the store's receipts and is compared
with every certificate the store shows.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from coordinator.home import CoordinatorHome, CoordinatorHomeError
from coordinator.pki import issue_store_certificate
from coordinator.registry import open_registry
from coordinator.registry.commands import adopt_payload
from loyalnet.chain_tls import public_key_sha256


def admit_to_control_plane(
    home: CoordinatorHome, name: str, public_key: Path, database: str | None
) -> Path:
    """Issue store ``name``'s certificate for ``public_key`` and register it in the registry."""
    key = serialization.load_ssh_public_key(public_key.read_bytes())
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CoordinatorHomeError(f"{public_key} is not an ECDSA public key.")
    certificate = home.store_certificate(name)
    pem = certificate.read_bytes() if certificate.is_file() else b""
    if not pem or _certified_key(pem) != public_key_sha256(key):
        # Registering again keeps the certificate the store already holds.
        pem = issue_store_certificate(home.tls, name, key)
        certificate.write_bytes(pem)
    registry = open_registry(home.database_url(database))
    try:
        now = datetime.now(UTC)
        registry.register_store(
            name,
            key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ).decode("ascii"),
            hashlib.sha256(pem).hexdigest(),
            now,
        )
        # A store joining after a promotion runs the pretrained model: tell it to catch up.
        promoted = registry.get_model_version(registry.promoted_version())
        record = registry.get_store(name)
        runs_it = record is not None and record.model_version == registry.promoted_version()
        if promoted is not None and not runs_it and not registry.pending_commands(name):
            registry.queue_command(
                name,
                "adopt-model",
                adopt_payload(
                    promoted.version, promoted.sha256, promoted.size_bytes, promoted.manifest_json
                ),
                now,
            )
    finally:
        registry.close()
    return certificate


def _certified_key(pem: bytes) -> str:
    try:
        return public_key_sha256(x509.load_pem_x509_certificate(pem).public_key())
    except ValueError:
        return ""
