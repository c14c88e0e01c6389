"""Signed model manifests: how a store knows a model came from its chain's coordinator.

The coordinator saves each global model with a JSON manifest (``coordinator.model_versions``)
and signs the manifest with the chain's Ed25519 model-signing key, made at ``loyalnet
coordinator init`` (``coordinator.pki``). The manifest describes the weights three ways:

- ``sha256``: the sha256 of the ``.pt`` file's bytes, for whoever holds the file;
- ``state_sha256``: ``loyalnet.model_digest.state_digest`` of the tensors themselves,
  independent of how they were serialised, so a store that received the tensors any other way
  can check them;
- ``arrays``: every tensor's name, dtype and shape, in order.

The signature covers every other field of the manifest (run config and metrics included), in
the canonical form :func:`signed_bytes`, and sits in the manifest under ``signature``. A store
that was given the chain's public key (``loyalnet store join``) adopts only models whose
manifest verifies under it and whose tensors match ``state_sha256``: a file swapped on the
coordinator's disk, in a backup or on the way to the store is refused.

Ed25519 because signatures are deterministic (no nonce to get wrong), keys and signatures are
small, and ``cryptography`` ships it everywhere loyalnet runs. This module holds no face code
and does not import torch (the coordinator's command line stays light); both the coordinator
and the stores use it, so the two sides cannot disagree on the format.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from loyalnet.errors import LoyalnetError

MODEL_SIGNING_PUBLIC_KEY = "model-signing.pub"
"""The public key's file name, beside ``ca.crt`` on the coordinator and in each store folder."""
SIGNATURE_FIELD = "signature"
SIGNATURE_ALGORITHM = "ed25519"
# Prefixed to the signed bytes so that a model-signing signature can never be replayed as a
# signature over anything else the key might one day sign.
_DOMAIN = b"loyalnet model manifest v1\n"


class ModelSignatureError(LoyalnetError):
    """A manifest that is unsigned, signed by another key, altered, or a key that is unusable."""


def signed_bytes(manifest: Mapping[str, object]) -> bytes:
    """The bytes a manifest's signature covers: every field but ``signature``, canonically.

    Canonical JSON (sorted keys, no spaces, ASCII) after a fixed prefix. Python's JSON writes
    and reads numbers back identically, so the manifest file's own layout does not matter.
    """
    body = {key: value for key, value in manifest.items() if key != SIGNATURE_FIELD}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return _DOMAIN + text.encode("ascii")


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short name of a public key: the first 16 hex digits of the sha256 of its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign_manifest(
    manifest: Mapping[str, object], private_key: Ed25519PrivateKey
) -> dict[str, object]:
    """A copy of ``manifest`` with its ``signature`` (replacing any earlier one)."""
    body = {key: value for key, value in manifest.items() if key != SIGNATURE_FIELD}
    signature = private_key.sign(signed_bytes(body))
    return {
        **body,
        SIGNATURE_FIELD: {
            "algorithm": SIGNATURE_ALGORITHM,
            "key_id": key_id(private_key.public_key()),
            "value": base64.b64encode(signature).decode("ascii"),
        },
    }


def verify_manifest(manifest: Mapping[str, object], public_key: Ed25519PublicKey) -> str:
    """Check the manifest's signature under ``public_key``; return that key's :func:`key_id`.

    Raises:
        ModelSignatureError: the manifest has no signature, another algorithm, or a signature
            that does not verify (another key signed it, or a field was changed afterwards).
    """
    expected = key_id(public_key)
    signature = manifest.get(SIGNATURE_FIELD)
    if not isinstance(signature, Mapping):
        raise ModelSignatureError(
            f"the model's manifest is not signed, and this store only adopts models signed by "
            f"the chain's model-signing key ({expected}); take the model version and its "
            "manifest from a coordinator that has the key (`loyalnet coordinator init`)."
        )
    if signature.get("algorithm") != SIGNATURE_ALGORITHM:
        raise ModelSignatureError(
            f"the model's manifest is signed with {signature.get('algorithm')!r}, not "
            f"{SIGNATURE_ALGORITHM}; this store cannot check it, so it does not adopt the model."
        )
    try:
        value = base64.b64decode(str(signature.get("value", "")), validate=True)
        public_key.verify(value, signed_bytes(manifest))
    except (InvalidSignature, binascii.Error, ValueError) as err:
        signer = signature.get("key_id")
        who = (
            f"another key ({signer})"
            if isinstance(signer, str) and signer != expected
            else "the chain's key over different contents"
        )
        raise ModelSignatureError(
            f"the model's manifest signature does not verify under the chain's model-signing "
            f"key ({expected}): it was made by {who}, so the manifest or the weights were "
            "altered or come from another chain; do not adopt it, and fetch the model version "
            "again from the chain's coordinator."
        ) from err
    return expected


def private_key_pem(private_key: Ed25519PrivateKey) -> bytes:
    """The PKCS#8 PEM bytes of a private key (unencrypted: the file itself is mode 0600)."""
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(public_key: Ed25519PublicKey) -> bytes:
    """The SubjectPublicKeyInfo PEM bytes of a public key."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def read_private_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in a PEM file.

    Raises:
        ModelSignatureError: the file cannot be read or holds no Ed25519 private key.
    """
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as err:
        raise ModelSignatureError(f"cannot read the model-signing key {path}: {err}.") from err
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise ModelSignatureError(
            f"{path} is not a PEM private key ({err}); restore the coordinator's "
            "tls/model-signing.key from backup."
        ) from err
    if not isinstance(key, Ed25519PrivateKey):
        raise ModelSignatureError(
            f"{path} holds a {type(key).__name__}, not an Ed25519 key; restore the "
            "coordinator's tls/model-signing.key from backup."
        )
    return key


def parse_public_key(data: bytes, source: str) -> Ed25519PublicKey:
    """The Ed25519 public key in PEM ``data`` (``source`` names it in errors).

    Raises:
        ModelSignatureError: the bytes hold no Ed25519 public key.
    """
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as err:
        raise ModelSignatureError(
            f"{source} is not a PEM public key ({err}); use the model-signing.pub from the "
            "coordinator's tls/ folder."
        ) from err
    if not isinstance(key, Ed25519PublicKey):
        raise ModelSignatureError(
            f"{source} holds a {type(key).__name__}, not the chain's Ed25519 model-signing key; "
            "use the model-signing.pub from the coordinator's tls/ folder."
        )
    return key


def read_public_key(path: Path) -> Ed25519PublicKey:
    """The Ed25519 public key in a PEM file.

    Raises:
        ModelSignatureError: the file cannot be read or holds no Ed25519 public key.
    """
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ModelSignatureError(
            f"cannot read the model-signing public key {path}: {err}."
        ) from err
    return parse_public_key(data, str(path))
