"""How a store reaches its chain's control plane: the address, and who it is there.

Everything comes from the store folder, as ``loyalnet store join`` left it: the address in
``store.toml`` (``control_plane``), the chain's CA (``ca.crt``), the store's certificate
(``control-plane.crt``) and its own node key (``node_key``, which never leaves the folder). Each
is checked again before the store connects, so a folder changed by hand fails here, with what
to run, rather than as a TLS error in the log.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from loyalnet.chain_tls import ClientIdentity, load_private_key
from loyalnet.errors import LoyalnetError
from store_node.config import StoreConfig, StorePaths, read_config
from store_node.node_identity import NodeIdentity
from store_node.sync.certificate import check_store_certificate

JOIN_HINT = (
    "run `loyalnet store join --store {root} --ca ca.crt --superlink HOST:PORT --control-plane "
    "HOST:PORT --certificate FILE` with the certificate the chain issued for this store"
)


@dataclass(frozen=True)
class ControlPlane:
    """The chain's control plane as this store reaches it.

    Attributes:
        address: ``host:port`` of the coordinator's control-plane port.
        store_id: the store's name; its certificate's CN.
        identity: the chain's CA, the store's certificate and its node key (in memory).
    """

    address: str
    store_id: str
    identity: ClientIdentity

    def channel(self) -> grpc.Channel:
        """A mutual-TLS channel to the control plane (connects lazily, reconnects by itself)."""
        return grpc.secure_channel(self.address, self.identity.credentials())


def control_plane_of(paths: StorePaths, config: StoreConfig | None = None) -> ControlPlane:
    """The control plane of the store in ``paths``, every file checked.

    Raises:
        LoyalnetError: not a store, no control plane joined, or a file missing or not matching
            (the message says which, and the join command that fixes it).
    """
    config = config if config is not None else read_config(paths)
    hint = JOIN_HINT.format(root=paths.root)
    if not config.control_plane:
        raise LoyalnetError(
            f"store {config.store_id} has no control plane address (control_plane in "
            f"{paths.config}); {hint}."
        )
    key = NodeIdentity(paths.root).private_key
    for needed, what in (
        (paths.ca_certificate, "the chain's CA certificate"),
        (key, "the store's node key"),
        (paths.control_plane_certificate, "the store's control-plane certificate"),
    ):
        if not needed.is_file():
            raise LoyalnetError(f"{paths.root} has no {needed.name} ({what}); {hint}.")
    identity = ClientIdentity.from_files(paths.ca_certificate, paths.control_plane_certificate, key)
    check_store_certificate(
        identity.certificate_pem,
        identity.ca_pem,
        load_private_key(key).public_key(),
        config.store_id,
        source=str(paths.control_plane_certificate),
    )
    return ControlPlane(config.control_plane, config.store_id, identity)
