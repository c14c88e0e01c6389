"""``loyalnet store serve``: the store's long-running process.

It runs, in the foreground, the store's *services* side by side and stops them together:

- the control-plane sync agent (``store_node.sync.SyncAgent``): heartbeats, the chain's
  erasure and model commands, signed receipts;
- the trainer (``store_node.trainer``), for a store of a chain: it answers the chain's training
  rounds for the store's SuperNode, whose ClientApp would otherwise load torch anew each round;
- the cameras (``store_node.camera.service.CameraService``): each camera of ``store.toml``
  (and of ``--camera``) read, recognised and turned into visit events; the agent's heartbeat
  carries their counts of the day.

The process needs a store that joined the chain's control plane (``loyalnet store join
--control-plane HOST:PORT --certificate FILE``) or at least one camera; it refuses to start
otherwise, saying so. A store with cameras and no control plane runs its cameras only.
SIGTERM and SIGINT stop it cleanly: each service is stopped (newest first), the outbox is left
consistent, and the exit code is 0. A service that dies on its own stops the process with exit
code 1, so that a supervisor (systemd) restarts it.

The log goes to stderr, one line per event, with UTC timestamps. It never names a member:
an erasure is logged by its command id.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Protocol

import grpc

from loyalnet.errors import LoyalnetError
from store_node.camera.gallery_view import GalleryView
from store_node.camera.service import CameraService, ServiceSettings, pipeline_loader
from store_node.config import (
    CameraSettings,
    LocalApiSettings,
    StoreConfig,
    StorePaths,
    check_cameras,
    read_config,
)
from store_node.local_api.server import LocalApi
from store_node.sync import AgentSettings, ControlPlane, SyncAgent, control_plane_of
from store_node.sync.agent import rpc_problem
from store_node.trainer.server import Trainer

log = logging.getLogger("loyalnet.store.serve")

STOP_TIMEOUT_SECONDS = 30.0
"""How long each service is given to stop (a model adoption in progress is not interrupted)."""
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StoreService(Protocol):
    """One part of the store's process, started and stopped with the others.

    ``stop`` must also be safe on a service that was never started (it releases what the
    service holds) and must return promptly; it returns whether the service ended in time.
    """

    name: str

    def start(self) -> None: ...

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> bool: ...

    def running(self) -> bool: ...


def store_services(
    paths: StorePaths,
    control_plane: ControlPlane | None,
    settings: AgentSettings,
    local: Sequence[StoreService] = (),
) -> list[StoreService]:
    """The services of the store's process, in the order they start (they stop in reverse).

    The agent starts first, so that erasures keep flowing while the cameras warm up; it reads
    the cameras' visit counts for its heartbeat. A store of a chain also trains the chain's
    rounds here, for its SuperNode (``store_node.trainer``). ``local``: the cameras and the
    local API.
    """
    services: list[StoreService] = []
    cameras = next((s for s in local if isinstance(s, CameraService)), None)
    if control_plane is not None:
        services.append(SyncAgent(paths, control_plane, settings, visits=cameras))
        services.append(Trainer(paths, settings.threads))
    services.extend(local)
    return services


def _local_services(
    paths: StorePaths,
    config: StoreConfig,
    cameras: Sequence[CameraSettings],
    camera_settings: ServiceSettings | None,
    api: LocalApiSettings,
) -> list[StoreService]:
    """The cameras and the local API, sharing one gallery view (one copy of the templates)."""
    if not cameras and not api.address:
        return []
    camera_settings = camera_settings if camera_settings is not None else ServiceSettings()
    view = GalleryView(paths, config.target_fpir, pipeline_loader(paths, camera_settings))
    services: list[StoreService] = []
    camera_service = None
    if cameras:
        camera_service = CameraService(
            paths, cameras, config.target_fpir, camera_settings, view=view
        )
        services.append(camera_service)
    if api.address:
        services.append(LocalApi(paths, api, view, camera_service))
    return services


def serve_store(
    store_dir: Path,
    *,
    once: bool = False,
    settings: AgentSettings | None = None,
    stop_timeout: float = STOP_TIMEOUT_SECONDS,
    cameras: Sequence[CameraSettings] = (),
    camera_settings: ServiceSettings | None = None,
    api: LocalApiSettings | None = None,
) -> int:
    """Run the store in ``store_dir`` until SIGTERM or SIGINT; return the exit code.

    Args:
        once: run one sync cycle in this thread and return (for scripts and tests); no
            signal handlers, no other services.
        settings: the sync agent's pacing and calibration settings.
        stop_timeout: seconds each service is given to stop.
        cameras: cameras to run besides those of ``store.toml``.
        camera_settings: how the cameras work (defaults when None).
        api: the local API's address and TLS files instead of ``[local_api]`` of
            ``store.toml``; an empty address runs no local API.

    Returns:
        0 after a clean stop (or a good cycle with ``once``); 1 when a service died.

    Raises:
        LoyalnetError: the store has neither joined a control plane nor a camera, a file in it
            does not match, another ``serve`` runs on it, or (with ``once``) the coordinator
            did not answer.
    """
    paths = StorePaths(Path(store_dir))
    config = read_config(paths)
    every_camera = (*config.cameras, *cameras)
    check_cameras(every_camera)
    settings = settings if settings is not None else AgentSettings()
    if once or not every_camera or config.control_plane:
        plane: ControlPlane | None = control_plane_of(paths, config)
    else:
        plane = None
        log.info(
            "store %s has not joined a control plane: running its cameras only", config.store_id
        )
    if once:
        assert plane is not None
        return _serve_once(paths, plane, settings)
    stopping = threading.Event()

    def request_stop(number: int, _frame: FrameType | None) -> None:
        log.info("%s received: stopping", signal.Signals(number).name)
        stopping.set()

    previous = {number: signal.signal(number, request_stop) for number in _STOP_SIGNALS}
    services: Sequence[StoreService] = ()
    code = 0
    try:
        local_api = api if api is not None else config.local_api
        services = store_services(
            paths,
            plane,
            settings,
            _local_services(paths, config, every_camera, camera_settings, local_api),
        )
        for service in services:
            service.start()
            log.info("%s started", service.name)
        log.info("store %s serving; stop it with SIGTERM or Ctrl-C", config.store_id)
        while not stopping.wait(1.0):
            dead = [service.name for service in services if not service.running()]
            if dead:
                log.error("%s ended on its own; stopping the store", ", ".join(dead))
                code = 1
                break
    finally:
        for service in reversed(services):
            if service.stop(stop_timeout):
                log.info("%s stopped", service.name)
        for number, handler in previous.items():
            signal.signal(number, handler)
    log.info("store %s stopped", config.store_id)
    return code


def _serve_once(paths: StorePaths, plane: ControlPlane, settings: AgentSettings) -> int:
    """One sync cycle in this thread; the coordinator not answering is an error."""
    agent = SyncAgent(paths, plane, settings)
    try:
        report = agent.run_once()
    except grpc.RpcError as err:
        raise LoyalnetError(
            f"the control plane at {plane.address} did not answer ({rpc_problem(err)}); check "
            "the address in store.toml and that the chain's coordinator runs, then try again."
        ) from err
    finally:
        agent.close()
    log.info(
        "one cycle: %d command(s) waiting at the coordinator, %d carried out, %d not done yet, "
        "%d receipt(s) delivered",
        report.pending_commands,
        report.commands_done,
        report.commands_waiting,
        report.receipts_delivered,
    )
    return 0


class _UtcFormatter(logging.Formatter):
    """``2026-11-02T09:14:03Z INFO loyalnet.store.sync: ...``: UTC, so stores' logs line up."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)sZ %(levelname)s %(name)s: %(message)s", datefmt="%Y-%m-%dT%H:%M:%S"
        )
        self.converter = _utc


def _utc(seconds: float | None) -> time.struct_time:
    return time.gmtime(seconds)


def configure_logging(level: int = logging.INFO) -> None:
    """Log to stderr with UTC timestamps (the process's entry point calls this once)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_UtcFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
