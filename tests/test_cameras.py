"""Simulated store cameras keep the image's shape, are reproducible, and really degrade faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from store_node.cameras import CameraCondition, through_camera
from store_node.face import FacePipeline, load_image


@pytest.fixture(scope="module")
def pipeline() -> FacePipeline:
    return FacePipeline.load(threads=1)


@pytest.mark.parametrize("condition", list(CameraCondition))
def test_shape_dtype_and_seed(condition: CameraCondition, lfw_images: Path) -> None:
    image = load_image(lfw_images / "Colin_Powell" / "Colin_Powell_0001.jpg")
    first = through_camera(image, condition, np.random.default_rng(3))
    again = through_camera(image, condition, np.random.default_rng(3))
    assert first.shape == image.shape and first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert np.array_equal(first, image) == (condition is CameraCondition.CLEAN)


def test_degraded_cameras_lower_genuine_similarity(
    pipeline: FacePipeline, lfw_images: Path
) -> None:
    names = ["Colin_Powell", "Tony_Blair", "Hugo_Chavez", "Jean_Chretien", "Ariel_Sharon"]
    rng = np.random.default_rng(0)

    def mean_similarity(condition: CameraCondition) -> float:
        scores = []
        for name in names:
            enrol = pipeline.encode(lfw_images / name / f"{name}_0002.jpg")[0].embedding
            seen = through_camera(
                load_image(lfw_images / name / f"{name}_0003.jpg"), condition, rng
            )
            scores.append(float(enrol @ pipeline.encode(seen)[0].embedding))
        return float(np.mean(scores))

    clean = mean_similarity(CameraCondition.CLEAN)
    assert mean_similarity(CameraCondition.MOTION_BLUR) < clean - 0.05
    assert mean_similarity(CameraCondition.LOW_RESOLUTION) < clean - 0.05
