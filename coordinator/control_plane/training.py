"""Training runs started from the control plane: one at a time, on the coordinator's SuperLink.

``Admin.StartTraining`` lands here. A run is submitted to the SuperLink as ``loyalnet demo``
does (the coordinator's Flower app, ``coordinator.flower_app``), followed in a background
thread, and when it ends its model version is entered into the registry with the run's
per-round aggregate metrics (read from the version's manifest: the ServerApp writes them
there). The model is not promoted: an admin decides that.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

from coordinator.control_plane.model_files import round_metrics
from coordinator.errors import CoordinatorError, RunConfigError
from coordinator.flower_app import write_flower_app
from coordinator.processes import LocalFederation
from coordinator.registry import Registry, RunRecord
from coordinator.run_config import FederationSettings, default_run_config
from coordinator.toml_text import TomlScalar

log = logging.getLogger(__name__)

DEFAULT_ROUNDS = 3
MAX_ROUNDS = 100
RUN_TIMEOUT_SECONDS = 6 * 3600.0
RUN_POLL_SECONDS = 10.0
"""How often a run's end is polled. Each poll is a ``flwr`` process (about 0.7 s of CPU), which a
small coordinator machine also needs for the round itself; the rounds' own progress reaches the
registry from the ServerApp as each round ends, so the console does not wait on this."""


class FederatedTraining:
    """Starts and follows federated runs; see the module docstring."""

    def __init__(
        self,
        federation: LocalFederation,
        coordinator_dir: Path,
        registry: Registry,
        import_models: Callable[[int | None], list[int]],
        clock: Callable[[], datetime],
    ) -> None:
        self._federation = federation
        self._coordinator_dir = coordinator_dir
        self._registry = registry
        self._import_models = import_models
        self._clock = clock
        self._lock = threading.Lock()
        self._running: int | None = None
        self._flower_runs: dict[int, int] = {}

    def flower_run(self, run_id: int) -> int | None:
        """The SuperLink's id of registry run ``run_id`` (``flwr ls``), if this process ran it."""
        with self._lock:
            return self._flower_runs.get(run_id)

    def start(
        self,
        rounds: int,
        requested_by: str,
        settings: Mapping[str, TomlScalar] | None = None,
    ) -> RunRecord:
        """Submit a run of ``rounds`` rounds (0: :data:`DEFAULT_ROUNDS`) and follow it.

        Args:
            settings: run config values other than the defaults (``coordinator.run_config``),
                e.g. ``{"strategy": "fedprox"}``; the Admin service passes none.

        Raises:
            RunConfigError: ``rounds`` or a setting is out of range.
            CoordinatorError: a run is going on, or the SuperLink refused the run.
        """
        rounds = rounds or DEFAULT_ROUNDS
        if not 1 <= rounds <= MAX_ROUNDS:
            raise RunConfigError(f"a run has 1 to {MAX_ROUNDS} rounds, not {rounds}.")
        # Checked here, so that a bad setting is refused to the admin who asked, not found by
        # the ServerApp minutes later.
        FederationSettings.from_run_config(
            {**default_run_config(self._coordinator_dir), **(settings or {})}
        )
        with self._lock:
            if self._running is not None:
                raise CoordinatorError(
                    f"training run {self._running} is still going; one run at a time."
                )
            run = self._registry.start_run(rounds, self._clock(), actor=requested_by)
            self._running = run.run_id
        try:
            flower_run = self._federation.submit_run(
                write_flower_app(self._coordinator_dir),
                {
                    **(settings or {}),
                    "coordinator-dir": str(self._coordinator_dir),
                    "num-rounds": rounds,
                    "registry-run-id": run.run_id,
                },
            )
        except CoordinatorError as err:
            self._finish(run.run_id, "failed", None, f"the SuperLink refused the run: {err}")
            raise
        with self._lock:
            self._flower_runs[run.run_id] = flower_run
        threading.Thread(
            target=self._follow, args=(run.run_id, flower_run), name="training-run", daemon=True
        ).start()
        return run

    def _follow(self, run_id: int, flower_run: int) -> None:
        try:
            status = self._federation.wait_for_run(
                flower_run, RUN_TIMEOUT_SECONDS, poll_seconds=RUN_POLL_SECONDS
            )
        except CoordinatorError as err:
            self._finish(run_id, "failed", None, str(err))
            return
        if not status.completed:
            self._finish(run_id, "failed", None, status.details or status.status)
            return
        self._import_models(run_id)
        # The version may have been entered by the coordinator's periodic scan of models/
        # before this import: it is the run's either way.
        made = [m.version for m in self._registry.list_model_versions() if m.run_id == run_id]
        version = max(made) if made else None
        if version is not None:
            model = self._registry.get_model_version(version)
            if model is not None:
                # The ServerApp reported each round as it ended; the manifest has them all,
                # should a report have been lost.
                for number, metrics in round_metrics(model.manifest_json).items():
                    self._registry.record_round(run_id, number, metrics)
        self._finish(run_id, "completed", version, f"Flower run {flower_run}")

    def _finish(self, run_id: int, status: str, version: int | None, message: str) -> None:
        try:
            self._registry.finish_run(run_id, status, version, message, self._clock())
        finally:
            with self._lock:
                self._running = None
        log.info("training run %d %s: %s", run_id, status, message)
