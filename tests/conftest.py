"""Shared fixtures: the real data home and a few real face photos from it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flwr.supercore.task_identity import TaskIdentity

from loyalnet.assets import data_home


@pytest.fixture(scope="session")
def shared() -> Path:
    """The shared data folder (../shared or $LOYALTY_DATA_HOME)."""
    return data_home()


@pytest.fixture(scope="session")
def lfw_images(shared: Path) -> Path:
    return shared / "data" / "lfw" / "images"


@pytest.fixture(scope="session")
def orl_images(shared: Path) -> Path:
    return shared / "data" / "orl"


@pytest.fixture
def task_identity(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Flower stamps each message with its process's run and node; outside one, fake them."""
    for name in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, name, 1)
    yield


# --- coordinator registry databases (tests/registry_databases.py) ----------------------------
# `registry_url` runs a test on a SQLite file and on a fresh PostgreSQL database (dropped
# afterwards); `postgres_server_url` is the server behind it ($LOYALNET_TEST_POSTGRES).
from registry_databases import postgres_server_url, registry_url  # noqa: E402, F401
