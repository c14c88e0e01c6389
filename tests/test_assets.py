"""Weights and data are found through LOYALTY_DATA_HOME and refused when missing or altered."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from loyalnet.assets import (
    DATA_HOME_ENV,
    MOBILEFACENET_WEIGHTS,
    RETINAFACE_WEIGHTS,
    AssetError,
    asset_path,
    data_home,
)
from store_node.face import FacePipeline


def test_the_shared_weights_verify(shared: Path) -> None:
    for asset in (MOBILEFACENET_WEIGHTS, RETINAFACE_WEIGHTS):
        assert asset_path(asset, shared) == shared / asset.relpath


def test_missing_weights_name_the_expected_path(tmp_path: Path) -> None:
    with pytest.raises(AssetError, match=str(tmp_path / "models" / "mobilefacenet_ms1m.pt")):
        asset_path(MOBILEFACENET_WEIGHTS, tmp_path)


def test_altered_weights_are_refused_before_loading(
    tmp_path: Path, shared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "models").mkdir()
    for asset in (MOBILEFACENET_WEIGHTS, RETINAFACE_WEIGHTS):
        shutil.copy(shared / asset.relpath, tmp_path / asset.relpath)
    altered = bytearray((tmp_path / MOBILEFACENET_WEIGHTS.relpath).read_bytes())
    altered[-100] ^= 0xFF
    (tmp_path / MOBILEFACENET_WEIGHTS.relpath).write_bytes(bytes(altered))
    monkeypatch.setenv(DATA_HOME_ENV, str(tmp_path))
    with pytest.raises(AssetError, match="altered or the wrong one"):
        FacePipeline.load()


def test_data_home_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_HOME_ENV, str(tmp_path))
    assert data_home() == tmp_path.resolve()
    monkeypatch.setenv(DATA_HOME_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(AssetError, match="is not a folder"):
        data_home()
