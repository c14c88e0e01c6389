"""Shared fixtures: the real data home and a few real face photos from it."""

from __future__ import annotations

from pathlib import Path

import pytest

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
