"""The control plane as one object: registry, services and a mutual-TLS gRPC server."""

from __future__ import annotations

import logging
from concurrent import futures
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Self

import grpc

from coordinator.control_plane.admin import AdminService, TrainingLauncher
from coordinator.control_plane.callers import STORE_CACHE_SECONDS, Callers
from coordinator.control_plane.heartbeats import HeartbeatBuffer
from coordinator.control_plane.model_files import ModelFiles, import_model_versions
from coordinator.control_plane.store_sync import StoreSyncService
from coordinator.errors import CoordinatorError
from coordinator.pki import CoordinatorTls
from coordinator.registry import Registry
from loyalnet.chain.v1 import chain_pb2_grpc
from loyalnet.model_signing import read_public_key

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_SECONDS = 10
SERVER_THREADS = 32
"""gRPC worker threads: unary calls are short (a heartbeat reads no database); event streams
hold one each, at most ``admin.MAX_WATCHERS``."""


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ControlPlaneSettings:
    """Where the control plane listens and how often stores should call.

    Attributes:
        host: the address to bind, e.g. ``0.0.0.0`` for every interface, ``127.0.0.1`` for
            this machine only.
        port: the TCP port; 0 picks a free one (see :attr:`ControlPlane.port`).
        heartbeat_seconds: how often stores are asked to heartbeat, 1 to 3600.
        models_dir: the folder training runs write model versions into.
        chain: the chain's name, as admins are told it.
        store_cache_seconds: how long a store's registration is trusted without a database
            read; a revocation takes effect within this time.
    """

    host: str
    port: int
    heartbeat_seconds: int
    models_dir: Path
    chain: str
    store_cache_seconds: float = STORE_CACHE_SECONDS


class ControlPlane:
    """The ``StoreSync`` and ``Admin`` services on one mutual-TLS port.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        settings: ControlPlaneSettings,
        tls: CoordinatorTls,
        registry: Registry,
        training: TrainingLauncher | None = None,
    ) -> None:
        if not 1 <= settings.heartbeat_seconds <= 3600:
            raise CoordinatorError(
                f"heartbeat interval {settings.heartbeat_seconds} s is outside 1..3600 s."
            )
        self.settings = settings
        self.registry = registry
        self._tls = tls
        self._public_key = (
            read_public_key(tls.model_signing_public_key)
            if tls.model_signing_public_key.exists()
            else None
        )
        self.models = ModelFiles(settings.models_dir, registry)
        self.import_models()
        self.heartbeats = HeartbeatBuffer(registry, utc_now)
        callers = Callers(registry, settings.store_cache_seconds)
        self.callers = callers
        self.admin = AdminService(
            registry,
            callers,
            self.heartbeats,
            self.models,
            utc_now,
            settings.chain,
            settings.heartbeat_seconds,
            training,
            refresh_models=self.import_models,
        )
        store_sync = StoreSyncService(
            registry, callers, self.heartbeats, self.models, utc_now, settings.heartbeat_seconds
        )
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=SERVER_THREADS, thread_name_prefix="rpc"),
            options=[("grpc.so_reuseport", 0)],
        )
        chain_pb2_grpc.add_StoreSyncServicer_to_server(store_sync, self._server)
        chain_pb2_grpc.add_AdminServicer_to_server(self.admin, self._server)
        credentials = grpc.ssl_server_credentials(
            [(tls.server_key.read_bytes(), tls.server_certificate.read_bytes())],
            root_certificates=tls.ca_certificate.read_bytes(),
            require_client_auth=True,
        )
        address = f"{settings.host}:{settings.port}"
        try:
            self.port = self._server.add_secure_port(address, credentials)
        except RuntimeError as err:
            raise CoordinatorError(
                f"cannot listen on {address} ({err}); is another coordinator running there? "
                "Choose another port with --port."
            ) from err

    def import_models(self, run_id: int | None = None) -> list[int]:
        """Enter new model versions from the models folder into the registry."""
        return import_model_versions(
            self.registry, self.settings.models_dir, self._public_key, run_id
        )

    def start(self) -> None:
        self.heartbeats.start()
        self._server.start()
        log.info("control plane listening on %s:%d", self.settings.host, self.port)

    def stop(self, grace_seconds: float = 5.0) -> None:
        """Stop taking calls, end event streams, and flush buffered heartbeats."""
        self.admin.stop()
        self._server.stop(grace_seconds).wait()
        self.heartbeats.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
