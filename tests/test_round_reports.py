"""A run started from the control plane shows its rounds as they end."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from flwr.app import MetricRecord

from coordinator.errors import RunConfigError
from coordinator.registry import open_registry
from coordinator.round_reports import RegistryRoundReports
from coordinator.run_config import FederationSettings, default_run_config


def test_each_round_is_written_to_the_registry_as_it_ends(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'coordinator.db'}"
    registry = open_registry(url)
    run = registry.start_run(2, datetime.now(UTC), actor="admin:ana")
    reports = RegistryRoundReports(url, run.run_id)
    try:
        reports(1, MetricRecord({"train-loss": 0.75, "num-examples": 120, "stores-trained": 3}))
        assert [(r.round, r.metrics) for r in registry.get_run(run.run_id).rounds] == [  # type: ignore[union-attr]
            (1, {"train-loss": 0.75, "num-examples": 120.0, "stores-trained": 3.0})
        ]
        registry.finish_run(run.run_id, "failed", None, "stopped", datetime.now(UTC))
        # A registry that refuses the report costs the live view, never the run.
        reports(2, MetricRecord({"train-loss": 0.5}))
    finally:
        reports.close()
        registry.close()


def test_the_registry_run_id_is_optional_and_checked(tmp_path: Path) -> None:
    values = default_run_config(tmp_path)
    assert FederationSettings.from_run_config(values).registry_run_id == 0
    del values["registry-run-id"]  # an app written before runs were reported
    assert FederationSettings.from_run_config(values).registry_run_id == 0
    with pytest.raises(RunConfigError, match="registry-run-id"):
        FederationSettings.from_run_config({**values, "registry-run-id": -1})
