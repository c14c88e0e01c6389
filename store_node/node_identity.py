"""A store's identity towards the coordinator: the key pair its SuperNode authenticates with.

The SuperLink admits only SuperNodes whose public key the chain registered, and a SuperNode
proves it holds the private key by signing its requests. The private key never leaves the store
folder (mode 0600); the public key (``node.pub``, OpenSSH format) is what the store hands to the
chain's admins. Keys are ECDSA P-384 in OpenSSH format, as Flower's SuperNode auth expects.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from loyalnet.errors import LoyalnetError
from loyalnet.secret_files import write_secret_file


@dataclass(frozen=True)
class NodeIdentity:
    """The paths of a store's SuperNode key pair (inside the store folder)."""

    folder: Path

    @property
    def private_key(self) -> Path:
        return self.folder / "node_key"

    @property
    def public_key(self) -> Path:
        return self.folder / "node.pub"

    def exists(self) -> bool:
        return self.private_key.is_file() and self.public_key.is_file()


def create_node_identity(folder: Path) -> NodeIdentity:
    """Make a new key pair in ``folder``.

    Raises:
        LoyalnetError: when the store already has one (replacing it would lock the store out
            until the chain registers the new public key).
    """
    identity = NodeIdentity(folder)
    if identity.private_key.exists() or identity.public_key.exists():
        raise LoyalnetError(
            f"{folder} already has a node key ({identity.public_key}); the chain knows the store "
            "by it, so keep it. Delete node_key and node.pub only to re-join with a new key."
        )
    key = ec.generate_private_key(ec.SECP384R1())
    write_secret_file(
        identity.private_key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    identity.public_key.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        + b"\n"
    )
    return identity
