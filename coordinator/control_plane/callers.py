"""Who may call what: the caller's certificate against the registry, on every call.

TLS has already checked that the client certificate chains to the chain's CA. What is left:

- a store's certificate must name a registered store, carry the public key registered for it
  (a re-issued certificate for an old key, or a certificate for a stolen name, does not pass)
  and the store must not be revoked: revoking a store in the registry is how the chain takes a
  certificate back;
- reading the chain needs an admin or viewer certificate; acting needs an admin one.

Store lookups are cached for :data:`STORE_CACHE_SECONDS`, so a heartbeat costs no database
read; a revocation takes effect within that time.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from coordinator.registry import Registry, StoreRecord
from loyalnet.chain_tls import ChainTlsError, Peer, Role, peer_of, public_key_sha256

STORE_CACHE_SECONDS = 60.0


@dataclass(frozen=True)
class KnownStore:
    """A registered store as the control plane checks it (no health, no history)."""

    name: str
    public_key_sha256: str
    revoked: bool
    public_key: ec.EllipticCurvePublicKey | None
    """The registered node key, which verifies the store's receipts; None if it is no ECDSA key."""


class Callers:
    """Resolves the caller of a gRPC call; aborts the call with a clear status otherwise."""

    def __init__(self, registry: Registry, cache_seconds: float = STORE_CACHE_SECONDS) -> None:
        self._registry = registry
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._stores: dict[str, tuple[float, KnownStore | None]] = {}

    def peer(self, context: grpc.ServicerContext) -> Peer:
        """The caller's identity from its certificate."""
        try:
            peer = peer_of(context)
        except ChainTlsError as err:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, str(err))
        if peer is None:
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "no client certificate; the control plane admits only certificates from the "
                "chain's CA.",
            )
        return peer

    def store(self, context: grpc.ServicerContext) -> KnownStore:
        """The calling store, registered, with its registered key and not revoked."""
        peer = self.peer(context)
        if peer.role is not Role.STORE:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{peer.actor} is not a store; StoreSync is for stores' certificates only.",
            )
        known = self._known_store(peer.name)
        if known is None:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"store {peer.name!r} is not registered with this coordinator; ask the chain to "
                "run `loyalnet coordinator register-store`.",
            )
        if known.public_key_sha256 != peer.public_key_sha256:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"the certificate of store {peer.name!r} is for another key than the one the "
                "chain registered; use the certificate issued when the store was registered.",
            )
        if known.revoked:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"store {peer.name!r} was revoked by the chain; its certificate is no longer "
                "accepted.",
            )
        return known

    def reader(self, context: grpc.ServicerContext) -> Peer:
        """An admin or a viewer."""
        peer = self.peer(context)
        if peer.role not in (Role.ADMIN, Role.VIEWER):
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{peer.actor} may not read the chain; admin and viewer certificates may.",
            )
        return peer

    def admin(self, context: grpc.ServicerContext) -> Peer:
        """An admin: someone who may act on the chain."""
        peer = self.peer(context)
        if peer.role is not Role.ADMIN:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{peer.actor} may only read; this needs an admin certificate.",
            )
        return peer

    def forget(self, name: str) -> None:
        """Drop a cached store, e.g. after it was revoked or registered anew."""
        with self._lock:
            self._stores.pop(name, None)

    def _known_store(self, name: str) -> KnownStore | None:
        now = time.monotonic()
        with self._lock:
            cached = self._stores.get(name)
        if cached is not None and now - cached[0] < self._cache_seconds:
            return cached[1]
        record = self._registry.get_store(name)
        known = None if record is None else _known(record)
        with self._lock:
            self._stores[name] = (now, known)
        return known


def _known(record: StoreRecord) -> KnownStore:
    key = serialization.load_pem_public_key(record.public_key_pem.encode("ascii"))
    return KnownStore(
        name=record.name,
        public_key_sha256=public_key_sha256(key),
        revoked=record.revoked_at is not None,
        public_key=key if isinstance(key, ec.EllipticCurvePublicKey) else None,
    )
