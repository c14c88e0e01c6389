"""Turn whatever the caller holds (a file path or a numpy array) into one RGB uint8 image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from loyalnet.errors import LoyalnetError

ImageSource = str | Path | np.ndarray
"""A path to a JPEG/PNG/PGM (any format Pillow reads) or an image array (see ``load_image``)."""


class ImageError(LoyalnetError):
    """An image file could not be read, or an array is not an image this pipeline accepts."""


def load_image(source: ImageSource) -> NDArray[np.uint8]:
    """Load ``source`` as an RGB image, shape (H, W, 3), dtype uint8, values 0-255.

    Files: anything Pillow decodes (JPEG, PNG, PGM, ...); grayscale is replicated to three
    channels, palettes are expanded and an alpha channel is dropped (not composited).
    Arrays: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4, alpha ignored), either uint8 or a float
    array in [0, 1] (scaled by 255) or in [0, 255]. Arrays are copied, never aliased.

    Raises:
        ImageError: the file is missing or not an image, or the array has another shape,
            dtype or value range, or is empty.
    """
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, str | Path):
        return _from_file(Path(source))
    raise ImageError(
        f"cannot read an image from a {type(source).__name__}: pass a file path or a numpy "
        "array of shape (H, W) or (H, W, 3)."
    )


def describe_source(source: ImageSource) -> str:
    """A short label for messages and reports: the path, or the shape of an array."""
    if isinstance(source, np.ndarray):
        return f"array {'x'.join(str(side) for side in source.shape)}"
    return str(source)


def _from_file(path: Path) -> NDArray[np.uint8]:
    if not path.is_file():
        raise ImageError(f"image file {path} does not exist: check the path.")
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageError(
            f"cannot read {path} as an image ({exc.__class__.__name__}): use a JPEG, PNG or "
            "PGM file."
        ) from exc
    return np.asarray(rgb, dtype=np.uint8).copy()


def _from_array(array: np.ndarray) -> NDArray[np.uint8]:
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        channels = array.shape[2]
    elif array.ndim == 2:
        channels = 1
    else:
        raise ImageError(
            f"image array has shape {array.shape}: expected (H, W), (H, W, 1), (H, W, 3) or "
            "(H, W, 4)."
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"image array has shape {array.shape}: it holds no pixels.")
    pixels = _as_uint8(array)
    if channels == 1:
        pixels = pixels.reshape(pixels.shape[0], pixels.shape[1], 1).repeat(3, axis=2)
    elif channels == 4:
        pixels = pixels[:, :, :3]
    return np.ascontiguousarray(pixels)


def _as_uint8(array: np.ndarray) -> NDArray[np.uint8]:
    if array.dtype == np.uint8:
        return array.copy()
    if not np.issubdtype(array.dtype, np.floating):
        raise ImageError(
            f"image array has dtype {array.dtype}: convert it to uint8 (0-255) or to float (0-1)."
        )
    if not np.all(np.isfinite(array)):
        raise ImageError("image array holds NaN or infinite values: pass finite pixel values.")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 255.0:
        raise ImageError(
            f"float image array spans [{low:g}, {high:g}]: scale it to [0, 1] or [0, 255]."
        )
    # A float image whose maximum is at most 1 is taken to be in [0, 1]; an all-dark image in
    # [0, 255] is indistinguishable from it, and that ambiguity is harmless for face detection.
    scale = 255.0 if high <= 1.0 else 1.0
    return np.clip(np.rint(array * scale), 0, 255).astype(np.uint8)
