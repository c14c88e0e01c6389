"""A chain's control plane, as far as one store sees it: an in-process ``StoreSync`` server.

Real gRPC on 127.0.0.1 with mutual TLS from a real chain CA (``coordinator.pki``): the server
shows the chain's server certificate and accepts only client certificates the CA issued; each
call is checked to come from the one store it was set up for (CN, OU ``store``, and the
registered node key). It queues commands, records heartbeats (and their raw bytes) and
acknowledgements, and verifies every receipt with ``loyalnet.receipts.verify_receipt`` against
the store's public key. Knobs let a test make it refuse the store, lose acknowledgements or
forget them.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import grpc
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.timestamp_pb2 import Timestamp

from coordinator.pki import CoordinatorTls, issue_store_certificate
from loyalnet.chain.v1 import chain_pb2, chain_pb2_grpc
from loyalnet.chain_tls import Role, load_private_key, peer_of, public_key_sha256
from loyalnet.receipts import ReceiptError, verify_receipt
from store_node.config import StorePaths, read_config
from store_node.joining import join_federation
from store_node.node_identity import NodeIdentity

CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class Acknowledgement:
    """One ``Acknowledge`` call the server took: the receipt as sent, and its verified fields."""

    command_id: str
    body: bytes
    signature: bytes
    fields: dict[str, object]
    accepted: bool


@dataclass
class FakeStoreSync(chain_pb2_grpc.StoreSyncServicer):
    """The coordinator's ``StoreSync`` for one store (see the module docstring).

    Attributes:
        store: the store's name (its certificate's CN).
        store_key: the store's registered node key (public).
        interval: the heartbeat interval the replies ask for (seconds).
        refusal: when set, every call is refused with this status and message.
        lose_acknowledgements: this many ``Acknowledge`` calls fail with UNAVAILABLE before
            anything is recorded (the coordinator went down mid-call).
        keep_acknowledged: a coordinator that lost its acknowledgements: commands stay queued.
    """

    store: str
    store_key: ec.EllipticCurvePublicKey
    interval: int = 1
    refusal: tuple[grpc.StatusCode, str] | None = None
    lose_acknowledgements: int = 0
    keep_acknowledged: bool = False
    commands: list[chain_pb2.Command] = field(default_factory=list)
    heartbeats: list[chain_pb2.StoreHealth] = field(default_factory=list)
    heartbeat_bytes: list[bytes] = field(default_factory=list)
    acknowledgements: list[Acknowledgement] = field(default_factory=list)
    models: dict[int, bytes] = field(default_factory=dict)
    sent: dict[str, chain_pb2.Command] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # -- what the chain's admins would do -------------------------------------------------

    def erase(self, member_id: str) -> str:
        """Queue an erasure of ``member_id``; returns its command id."""
        return self._queue(
            chain_pb2.Command(
                erase_member=chain_pb2.EraseMember(
                    request_id=f"erasure-{uuid.uuid4().hex[:8]}", member_id=member_id
                )
            )
        )

    def adopt(self, version: int, sha256: str = "", size: int = 0, manifest_json: str = "") -> str:
        """Queue an adoption of model ``version``; returns its command id."""
        return self._queue(
            chain_pb2.Command(
                adopt_model=chain_pb2.AdoptModel(
                    version=version, sha256=sha256, size_bytes=size, manifest_json=manifest_json
                )
            )
        )

    def requeue(self, command_id: str) -> None:
        """Send an acknowledged command again (a coordinator restored from an old backup)."""
        with self.lock:
            self.commands.append(self.sent[command_id])

    def _queue(self, command: chain_pb2.Command) -> str:
        command.command_id = f"cmd-{uuid.uuid4().hex[:12]}"
        command.issued_at.GetCurrentTime()
        with self.lock:
            self.commands.append(command)
            self.sent[command.command_id] = command
        return command.command_id

    def fields_of(self, command_id: str) -> dict[str, object]:
        """The verified receipt fields of ``command_id``'s first acknowledgement."""
        return next(a.fields for a in self.acknowledgements if a.command_id == command_id)

    # -- StoreSync ------------------------------------------------------------------------

    def _caller(self, context: grpc.ServicerContext) -> None:
        """Refuse anyone but the store, and everyone while ``refusal`` is set."""
        if self.refusal is not None:
            context.abort(*self.refusal)
        peer = peer_of(context)
        if (
            peer is None
            or peer.role is not Role.STORE
            or peer.name != self.store
            or peer.public_key_sha256 != public_key_sha256(self.store_key)
        ):
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "not this chain's store")

    def Heartbeat(
        self, request: chain_pb2.HeartbeatRequest, context: grpc.ServicerContext
    ) -> chain_pb2.HeartbeatReply:
        self._caller(context)
        now = Timestamp()
        now.GetCurrentTime()
        with self.lock:
            self.heartbeats.append(request.health)
            self.heartbeat_bytes.append(request.SerializeToString())
            pending = len(self.commands)
        return chain_pb2.HeartbeatReply(
            pending_commands=pending, server_time=now, heartbeat_interval_seconds=self.interval
        )

    def PullCommands(
        self, request: chain_pb2.PullCommandsRequest, context: grpc.ServicerContext
    ) -> chain_pb2.PullCommandsReply:
        self._caller(context)
        with self.lock:
            return chain_pb2.PullCommandsReply(commands=list(self.commands))

    def Acknowledge(
        self, request: chain_pb2.AcknowledgeRequest, context: grpc.ServicerContext
    ) -> chain_pb2.AcknowledgeReply:
        self._caller(context)
        with self.lock:
            if self.lose_acknowledgements > 0:
                self.lose_acknowledgements -= 1
                context.abort(grpc.StatusCode.UNAVAILABLE, "the coordinator is shutting down")
        try:
            fields = verify_receipt(request.receipt.body, request.receipt.signature, self.store_key)
        except ReceiptError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        if fields.get("command_id") != request.command_id:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the receipt is for another command")
        with self.lock:
            first = all(a.command_id != request.command_id for a in self.acknowledgements)
            self.acknowledgements.append(
                Acknowledgement(
                    request.command_id,
                    request.receipt.body,
                    request.receipt.signature,
                    fields,
                    first,
                )
            )
            if not self.keep_acknowledged:
                self.commands = [c for c in self.commands if c.command_id != request.command_id]
        return chain_pb2.AcknowledgeReply(accepted=first)

    def FetchModel(
        self, request: chain_pb2.FetchModelRequest, context: grpc.ServicerContext
    ) -> Iterator[chain_pb2.ModelChunk]:
        self._caller(context)
        data = self.models.get(request.version)
        if data is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no model version {request.version}")
        for offset in range(0, len(data), CHUNK_BYTES):
            yield chain_pb2.ModelChunk(
                data=data[offset : offset + CHUNK_BYTES], offset=offset, total_bytes=len(data)
            )


class ControlPlaneServer:
    """A gRPC server for a :class:`FakeStoreSync`, with the chain's mutual TLS.

    Stop and start it again to take the coordinator away and bring it back on the same port.
    """

    def __init__(self, tls: CoordinatorTls, servicer: FakeStoreSync, port: int = 0) -> None:
        self.tls = tls
        self.servicer = servicer
        self.port = port
        self._server: grpc.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ControlPlaneServer:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        chain_pb2_grpc.add_StoreSyncServicer_to_server(self.servicer, server)
        credentials = grpc.ssl_server_credentials(
            [(self.tls.server_key.read_bytes(), self.tls.server_certificate.read_bytes())],
            root_certificates=self.tls.ca_certificate.read_bytes(),
            require_client_auth=True,
        )
        self.port = server.add_secure_port(self.address, credentials)
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None

    def __enter__(self) -> ControlPlaneServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def store_public_key(store: Path) -> ec.EllipticCurvePublicKey:
    """The public half of the store's node key (what the chain registered)."""
    return load_private_key(NodeIdentity(store).private_key).public_key()


def issue_certificate(tls: CoordinatorTls, store: Path, folder: Path) -> Path:
    """What ``register-store`` hands the store: its certificate, as a file in ``folder``."""
    name = read_config(StorePaths(store)).store_id
    path = folder / f"{name}.crt"
    path.write_bytes(issue_store_certificate(tls, name, store_public_key(store)))
    return path


def admit_store(tls: CoordinatorTls, store: Path, address: str, folder: Path) -> Path:
    """Join ``store`` to the chain and its control plane at ``address``, as a store's staff
    would: join (making the node key), get the certificate issued, join again with it."""
    paths = StorePaths(store)
    join_federation(paths, tls.ca_certificate, "127.0.0.1:9092")
    certificate = issue_certificate(tls, store, folder)
    join_federation(
        paths,
        tls.ca_certificate,
        "127.0.0.1:9092",
        control_plane=address,
        certificate_file=certificate,
    )
    return certificate
