"""The LFW benchmark on a small subset, and its face choice and fallback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from store_node.bench.cli import bench_app, summary_table
from store_node.bench.face_choice import (
    FaceChooser,
    FaceSource,
    central_face,
    centre_fallback_face,
)
from store_node.bench.lfw import run_lfw_benchmark, select_pairs
from store_node.datasets import lfw_pairs
from store_node.face import Face, FacePipeline, load_image

KEYS = {
    "accuracy_mean",
    "accuracy_std",
    "accuracy_per_fold",
    "tar_at_far_1e-3",
    "tar_at_far_1e-2",
    "detect_ms_per_image",
    "embed_ms_per_face",
    "images",
    "pairs",
    "no_face",
    "model_version",
    "flip",
    "threads",
    "folds",
}


@pytest.fixture(scope="module")
def pipeline() -> Iterator[FacePipeline]:
    # One thread: on a shared 2-core machine, two torch threads contend with other processes
    # and run many times slower. The process-wide setting is restored afterwards.
    before = torch.get_num_threads()
    yield FacePipeline.load(flip=False, threads=1)
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small_run(pipeline: FacePipeline) -> tuple[dict[str, Any], list[tuple[int, int]]]:
    calls: list[tuple[int, int]] = []
    result = run_lfw_benchmark(
        pipeline, folds=2, max_pairs_per_fold=20, progress=lambda d, t: calls.append((d, t))
    )
    return result, calls


def _face(box: tuple[float, float, float, float]) -> Face:
    return Face(box=box, score=0.99, landmarks=np.zeros((5, 2), dtype=np.float32))


def test_select_pairs_keeps_both_kinds() -> None:
    pairs = select_pairs(lfw_pairs(), folds=2, max_pairs_per_fold=7)
    assert len(pairs) == 14
    assert [sum(p.same for p in pairs if p.fold == f) for f in (0, 1)] == [4, 4]
    assert len(select_pairs(lfw_pairs(), folds=3)) == 1800
    with pytest.raises(ValueError, match="folds"):
        select_pairs([], folds=1)


def test_central_face_prefers_centre_over_size() -> None:
    big_corner = _face((0.0, 0.0, 120.0, 120.0))
    small_centre = _face((100.0, 100.0, 150.0, 150.0))
    assert central_face([big_corner, small_centre], 250, 250) is small_centre
    with pytest.raises(ValueError):
        central_face([], 250, 250)


def test_centre_fallback_face_placement() -> None:
    face = centre_fallback_face(250, 250)
    assert face.score == 0.0
    # Eye midpoint of the scaled template: x 61 + 1.12 * 55.9 ~= 123.6, y 56 + 1.12 * 51.6.
    eyes = face.landmarks[:2].mean(axis=0)
    assert eyes == pytest.approx([123.6, 113.8], abs=0.2)
    wide = centre_fallback_face(500, 250)
    assert wide.landmarks == pytest.approx(face.landmarks + np.array([125.0, 0.0]), abs=1e-4)
    double = centre_fallback_face(500, 500)
    assert double.landmarks == pytest.approx(face.landmarks * 2, abs=1e-3)


def test_chooser_falls_back_on_a_blank_image(pipeline: FacePipeline) -> None:
    blank = np.full((250, 250, 3), 128, dtype=np.uint8)
    chosen = FaceChooser(pipeline).choose(blank, [])
    assert chosen.source is FaceSource.CENTRE_FALLBACK
    assert pipeline.detector.score_threshold == 0.9  # the caller's detector is left alone


def test_chooser_uses_detections(pipeline: FacePipeline) -> None:
    image = load_image(lfw_pairs()[0].left)
    faces = pipeline.detect(image)
    chosen = FaceChooser(pipeline).choose(image, faces)
    assert chosen.source is FaceSource.DETECTED
    assert chosen.face in faces


def test_small_benchmark(small_run: tuple[dict[str, Any], list[tuple[int, int]]]) -> None:
    result, calls = small_run
    assert result.keys() >= KEYS
    pairs = select_pairs(lfw_pairs(), folds=2, max_pairs_per_fold=20)
    unique = {path for pair in pairs for path in (pair.left, pair.right)}
    assert result["images"] == len(unique)
    assert result["pairs"] == 40
    assert result["folds"] == 2
    assert 0.5 <= result["accuracy_mean"] <= 1.0
    assert len(result["accuracy_per_fold"]) == 2
    assert 0.0 <= result["tar_at_far_1e-3"] <= result["tar_at_far_1e-2"] <= 1.0
    assert result["detect_ms_per_image"] > 0
    assert result["embed_ms_per_face"] > 0
    assert result["flip"] is False
    assert result["threads"] >= 1
    no_face = result["no_face"]
    assert no_face["count"] == no_face["recovered_low_threshold"] + no_face["centre_fallback"]
    assert no_face["handling"]
    assert calls[0] == (0, len(unique))
    assert calls[-1] == (len(unique), len(unique))
    json.dumps(result)


def test_cli_json_prints_only_json(monkeypatch: pytest.MonkeyPatch) -> None:
    import store_node.bench.lfw as lfw_module
    import store_node.face as face_module

    seen: dict[str, object] = {}

    def fake_load(**kwargs: object) -> str:
        seen.update(kwargs)
        return "pipeline"

    def fake_run(pipeline: str, folds: int = 10, **kwargs: object) -> dict[str, object]:
        seen.update(pipeline=pipeline, folds=folds, **kwargs)
        return {"accuracy_mean": 0.99, "folds": folds}

    monkeypatch.setattr(face_module.FacePipeline, "load", fake_load)
    monkeypatch.setattr(lfw_module, "run_lfw_benchmark", fake_run)
    args = ["lfw", "--folds", "3", "--json", "--no-flip", "--threads", "1"]
    result = CliRunner().invoke(bench_app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"accuracy_mean": 0.99, "folds": 3}
    assert seen == {"flip": False, "threads": 1, "pipeline": "pipeline", "folds": 3}


def test_cli_table_output(
    monkeypatch: pytest.MonkeyPatch, small_run: tuple[dict[str, Any], list[tuple[int, int]]]
) -> None:
    import store_node.bench.lfw as lfw_module
    import store_node.face as face_module

    def fake_run(pipeline: str, folds: int = 10, **kwargs: Any) -> dict[str, Any]:
        kwargs["progress"](0, 2)
        kwargs["progress"](2, 2)
        return small_run[0]

    monkeypatch.setattr(face_module.FacePipeline, "load", lambda **kwargs: "pipeline")
    monkeypatch.setattr(lfw_module, "run_lfw_benchmark", fake_run)
    result = CliRunner().invoke(bench_app, ["lfw", "--folds", "2"])
    assert result.exit_code == 0, result.output
    assert "LFW View 2 verification" in result.stdout
    assert "accuracy" in result.stdout
    assert not result.stdout.lstrip().startswith("{")


def test_summary_table_rows(small_run: tuple[dict[str, Any], list[tuple[int, int]]]) -> None:
    assert summary_table(small_run[0]).row_count == 11


def test_cli_rejects_one_fold() -> None:
    result = CliRunner().invoke(bench_app, ["lfw", "--folds", "1"])
    assert result.exit_code != 0


def test_missing_data_raises_asset_error(
    pipeline: FacePipeline, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from loyalnet.assets import AssetError

    with pytest.raises(AssetError):
        run_lfw_benchmark(pipeline, folds=2, home=tmp_path)
