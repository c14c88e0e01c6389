"""Each round of a run the control plane started, written to the registry as it ends.

The ServerApp runs in a process of Flower's (``flwr-serverapp``), not in the coordinator's
own; it reaches the registry through the same database URL (``coordinator.toml``), and only
when the run config names the registry's run (``registry-run-id``). The metrics are the
round's aggregates over stores, never a store's own numbers. A registry that cannot be written
costs the console its live view, never the run: failures are logged and training goes on.
"""

from __future__ import annotations

from logging import WARNING

from flwr.app import MetricRecord
from flwr.common import log

from coordinator.errors import CoordinatorError
from coordinator.registry import Registry, open_registry


class RegistryRoundReports:
    """A ``strategy.RoundListener`` recording rounds into run ``run_id`` of a registry."""

    def __init__(self, database_url: str, run_id: int) -> None:
        self._url = database_url
        self._run_id = run_id
        self._registry: Registry | None = None

    def __call__(self, server_round: int, metrics: MetricRecord) -> None:
        numbers = {
            key: float(value)
            for key, value in metrics.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
        try:
            if self._registry is None:
                self._registry = open_registry(self._url)
            self._registry.record_round(self._run_id, server_round, numbers)
        except CoordinatorError as err:
            log(WARNING, "round %d not reported to the registry: %s", server_round, err)

    def close(self) -> None:
        if self._registry is not None:
            self._registry.close()
