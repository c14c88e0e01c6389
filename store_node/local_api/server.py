"""The store's local gRPC server, one of the services of ``loyalnet store serve``.

It listens on ``127.0.0.1:7070`` by default, reachable from the store computer only. To let
the clerk's tablet or the till reach it over the store's network, bind another address in the
``[local_api]`` table of ``store.toml`` and give it a server certificate, its key and the CA
that signs the clients' certificates: the server then speaks TLS and refuses any client
without a certificate from that CA (mutual TLS). An address other than loopback without TLS
is refused at start.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from concurrent import futures
from pathlib import Path

import grpc

from loyalnet.errors import LoyalnetError
from loyalnet.store.v1 import store_pb2_grpc
from store_node.camera.gallery_view import GalleryView
from store_node.camera.service import CameraService
from store_node.config import LocalApiSettings, StorePaths
from store_node.local_api.servicer import MAX_PHOTO_BYTES, MAX_PHOTOS, StoreServicer

log = logging.getLogger("loyalnet.store.api")

WORKERS = 8
"""Calls served at once; each open visit stream holds one."""


class LocalApi:
    """The ``loyalnet.store.v1.Store`` server (a ``StoreService`` of ``store serve``).

    Args:
        paths: the store folder.
        settings: address and TLS files (``[local_api]`` of ``store.toml``).
        view: the gallery view shared with the cameras.
        cameras: the camera service, for health (None without cameras).
    """

    name = "local API"

    def __init__(
        self,
        paths: StorePaths,
        settings: LocalApiSettings,
        view: GalleryView,
        cameras: CameraService | None = None,
    ) -> None:
        self._paths = paths
        self._settings = settings
        self._view = view
        self._cameras = cameras
        self._stopping = threading.Event()
        self._server: grpc.Server | None = None
        self.port = 0
        """The port listened on, once started."""

    def start(self) -> None:
        """Listen; raises LoyalnetError when the address is taken or the TLS files are bad."""
        settings = self._settings
        credentials = _credentials(self._paths.root, settings)
        if credentials is None and not _loopback(settings.address):
            raise LoyalnetError(
                f"the local API would listen on {settings.address} without TLS; bind it to "
                "127.0.0.1, or set certificate, key and client_ca in [local_api] of store.toml."
            )
        limit = MAX_PHOTOS * MAX_PHOTO_BYTES + 2**20
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="local-api"),
            options=[("grpc.max_receive_message_length", limit)],
        )
        store_pb2_grpc.add_StoreServicer_to_server(
            StoreServicer(self._paths, self._view, self._cameras, self._stopping), server
        )
        try:
            if credentials is None:
                port = server.add_insecure_port(settings.address)
            else:
                port = server.add_secure_port(settings.address, credentials)
        except RuntimeError as err:
            port = 0
            problem = str(err)
        else:
            problem = "the port is taken or the address is not this computer's"
        if port == 0:
            raise LoyalnetError(
                f"the local API cannot listen on {settings.address} ({problem}); choose another "
                "address with --api HOST:PORT or in [local_api] of store.toml."
            )
        server.start()
        self._server = server
        self.port = port
        host = settings.address.rpartition(":")[0]
        log.info(
            "local API listening on %s:%d%s", host, port, " (mutual TLS)" if credentials else ""
        )

    def stop(self, timeout: float = 30.0) -> bool:
        """End open streams and stop serving; calls in progress get ``timeout`` seconds."""
        self._stopping.set()
        if self._server is None:
            return True
        return bool(self._server.stop(grace=min(timeout, 5.0)).wait(timeout))

    def running(self) -> bool:
        return self._server is not None and not self._stopping.is_set()


def _loopback(address: str) -> bool:
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _credentials(root: Path, settings: LocalApiSettings) -> grpc.ServerCredentials | None:
    """Mutual-TLS credentials from the configured files (relative to the store folder)."""
    named = (settings.certificate, settings.key, settings.client_ca)
    if not any(named):
        return None
    if not all(named):
        raise LoyalnetError(
            "[local_api] in store.toml needs all of certificate, key and client_ca for TLS "
            "(or none of them for a loopback-only API)."
        )
    contents = []
    for name, what in zip(named, ("certificate", "key", "client_ca"), strict=True):
        path = root / name
        try:
            contents.append(path.read_bytes())
        except OSError as err:
            raise LoyalnetError(
                f"[local_api] {what} = {name}: cannot read {path} ({err.strerror}); check it."
            ) from err
    certificate, key, client_ca = contents
    return grpc.ssl_server_credentials(
        [(key, certificate)], root_certificates=client_ca, require_client_auth=True
    )
