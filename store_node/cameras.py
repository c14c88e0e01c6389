"""What a store's camera does to a face: whole-image degradations for demos and simulations.

Enrolment photos are taken at the till; the cameras that recognise people later see them
through their own optics and sensor. Each condition maps an RGB uint8 image (H, W, 3) to one of
the same shape, before detection, so the detector faces the degradation too:

- ``clean``: unchanged;
- ``low_light``: exposure cut to ``LOW_LIGHT_GAIN`` of the light with a display gamma of 2.2,
  then sensor noise of standard deviation ``LOW_LIGHT_NOISE`` (in 0-255 units);
- ``motion_blur``: a horizontal box blur ``MOTION_BLUR_FRACTION`` of the image width long, a
  person walking across the field of view during the exposure;
- ``low_resolution``: shrunk to ``LOW_RESOLUTION_FRACTION`` of its side (antialiased) and
  enlarged back (bilinear), a face a few metres from a ceiling camera;
- ``grayscale``: luminance only, as night-mode and many older cameras deliver.

Real harsh lighting is not simulated here: it comes from Extended Yale B photos.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np
from numpy.typing import NDArray
from PIL import Image

LOW_LIGHT_GAIN = 0.25
LOW_LIGHT_NOISE = 6.0
MOTION_BLUR_FRACTION = 0.05
LOW_RESOLUTION_FRACTION = 0.25


class CameraCondition(StrEnum):
    """How a store's camera sees people; ``store_node.cameras`` says what each one does."""

    CLEAN = "clean"
    LOW_LIGHT = "low_light"
    MOTION_BLUR = "motion_blur"
    LOW_RESOLUTION = "low_resolution"
    GRAYSCALE = "grayscale"


def through_camera(
    image: NDArray[np.uint8], condition: CameraCondition, rng: np.random.Generator
) -> NDArray[np.uint8]:
    """``image`` as a camera of ``condition`` would deliver it; ``rng`` draws sensor noise."""
    if condition is CameraCondition.CLEAN:
        return image
    if condition is CameraCondition.LOW_LIGHT:
        linear = (image.astype(np.float32) / 255.0) ** 2.2 * LOW_LIGHT_GAIN
        dark = linear ** (1 / 2.2) * 255.0
        noisy = dark + rng.normal(0.0, LOW_LIGHT_NOISE, size=image.shape)
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    if condition is CameraCondition.MOTION_BLUR:
        return _horizontal_box_blur(image, max(3, round(image.shape[1] * MOTION_BLUR_FRACTION)))
    if condition is CameraCondition.LOW_RESOLUTION:
        height, width = image.shape[:2]
        small = (
            max(8, round(width * LOW_RESOLUTION_FRACTION)),
            max(8, round(height * LOW_RESOLUTION_FRACTION)),
        )
        picture = Image.fromarray(image).resize(small, Image.Resampling.BOX)
        return np.asarray(picture.resize((width, height), Image.Resampling.BILINEAR))
    if condition is CameraCondition.GRAYSCALE:
        gray = np.asarray(Image.fromarray(image).convert("L"))
        return np.repeat(gray[:, :, None], 3, axis=2)
    raise ValueError(f"unknown camera condition {condition!r}")


def _horizontal_box_blur(image: NDArray[np.uint8], length: int) -> NDArray[np.uint8]:
    # A running mean over `length` columns via cumulative sums: O(pixels) whatever the length.
    padded = np.pad(
        image.astype(np.float64),
        ((0, 0), (length // 2, length - 1 - length // 2), (0, 0)),
        mode="edge",
    )
    sums = np.cumsum(np.pad(padded, ((0, 0), (1, 0), (0, 0))), axis=1)
    blurred = (sums[:, length:, :] - sums[:, :-length, :]) / length
    return np.clip(np.rint(blurred), 0, 255).astype(np.uint8)
