"""``loyalnet coordinator serve``: the control plane and the SuperLink, in the foreground.

Opens the registry (applying its migrations), enters model versions found in ``models/``,
starts Flower's SuperLink (unless told not to) and the control plane, and waits until
``stop`` is set (the command line sets it on Ctrl-C and SIGTERM). Then it stops what it
started, in reverse order; buffered heartbeats are flushed on the way out.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from coordinator.control_plane.server import ControlPlane, ControlPlaneSettings, utc_now
from coordinator.control_plane.training import FederatedTraining
from coordinator.home import CoordinatorHome
from coordinator.processes import LocalFederation
from coordinator.registry import Registry, open_registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunningCoordinator:
    """What :func:`serve` started, handed to its ``ready`` callback.

    Attributes:
        federation: the SuperLink's processes, None when served without one.
        training: starts and follows runs, None without a SuperLink.
    """

    plane: ControlPlane
    federation: LocalFederation | None
    training: FederatedTraining | None


MODEL_SCAN_SECONDS = 30.0
"""How often ``models/`` is scanned for versions written outside a run this process started
(e.g. by ``loyalnet demo`` or a restored backup)."""


def serve(
    home: CoordinatorHome,
    stop: threading.Event,
    *,
    database: str | None = None,
    host: str = "0.0.0.0",
    port: int | None = None,
    superlink: bool = True,
    ready: Callable[[RunningCoordinator], None] | None = None,
) -> None:
    """Serve until ``stop`` is set.

    Args:
        database: the registry's URL instead of ``coordinator.toml``'s (or the SQLite file).
        host: the control plane's bind address.
        port: its port instead of ``coordinator.toml``'s ``control_port``.
        superlink: also run Flower's SuperLink (needed to train; not to erase or roll out).
        ready: called once everything listens, e.g. to print where.

    Raises:
        CoordinatorError: a broken folder, an unreachable database, a port in use.
    """
    config = home.read_config()
    registry = open_registry(home.database_url(database))
    federation: LocalFederation | None = None
    plane: ControlPlane | None = None
    try:
        _close_interrupted_runs(registry)
        training = None
        if superlink:
            federation = home.local_federation()
            federation.start_superlink()
        settings = ControlPlaneSettings(
            host=host,
            port=config.control_port if port is None else port,
            heartbeat_seconds=config.heartbeat_seconds,
            models_dir=home.models_dir,
            chain=config.chain,
        )
        plane = ControlPlane(settings, home.tls, registry)
        if federation is not None:
            training = FederatedTraining(
                federation, home.folder.resolve(), registry, plane.import_models, utc_now
            )
            plane.admin.attach_training(training)
        plane.start()
        if ready is not None:
            ready(RunningCoordinator(plane, federation, training))
        while not stop.wait(MODEL_SCAN_SECONDS):
            added = plane.import_models()
            if added:
                log.info("model versions entered into the registry: %s", added)
    finally:
        if plane is not None:
            plane.stop()
        if federation is not None:
            federation.stop()
        registry.close()


def _close_interrupted_runs(registry: Registry) -> None:
    """Mark runs a previous coordinator left running as failed: nobody follows them now."""
    for run in registry.list_runs():
        if run.status == "running":
            registry.finish_run(
                run.run_id,
                "failed",
                None,
                "the coordinator stopped while the run was going on; start a new run",
                utc_now(),
            )
