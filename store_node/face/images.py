"""Turn whatever the caller holds (a file path or a numpy array) into one RGB uint8 image.

Every input either becomes an (H, W, 3) uint8 array whose longer side is at most
``MAX_WORKING_SIDE`` pixels, or is refused with an ``ImageError`` that names the photo and says
what to do. A camera or a customer can hand a store anything: a file whose header claims
50000x50000 pixels in under 70 bytes (a decompression bomb), a 12000x12000 scan, a truncated upload,
an empty file, a folder. Refusing one photo must never stop the others in the same call, so
nothing else may escape from here.

Two limits keep the memory and time of one photo bounded:

- ``MAX_IMAGE_PIXELS``: a file whose header declares more pixels is refused before a single
  pixel is decoded; an array with more pixels is refused too (one rule for every input).
- ``MAX_WORKING_SIDE``: a larger image is scaled down before the face pipeline sees it. JPEGs
  are decoded directly at 1/2, 1/4 or 1/8 size where that keeps at least 3/4 of the working
  side (``Image.draft``), a fraction of a full decode's time and memory. ``read_image`` reports
  the scale, so face boxes can be given back in the photo's own pixels.
"""

from __future__ import annotations

import functools
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from loyalnet.errors import LoyalnetError

ImageSource = str | Path | np.ndarray | bytes
"""A path to a JPEG/PNG/PGM (see ``ACCEPTED_FORMATS``), the bytes of such a file (an upload),
or an image array (see ``load_image``)."""

MAX_IMAGE_PIXELS = 40_000_000
"""Images with more pixels (width x height) than this are refused, unread.

40 megapixels admits every camera frame a store works with (an 8K frame is 33 MP, a full-frame
camera photo 24-36 MP) and keeps the worst decode to about 120 MB of RGB (160 MB with alpha).
It is stricter than Pillow's own guard (a warning above about 89 MP, an error above 179 MP),
which this module turns into the same refusal without changing Pillow's settings.
"""

MAX_WORKING_SIDE = 3200
"""Longer side, in pixels, of the image the face pipeline works on; larger ones are scaled down.

The detector looks at images shrunk to 640 pixels (``FaceDetector.max_side``) and finds faces
from about 16 pixels wide there. Such a face is 16 * 3200 / 640 = 80 pixels wide at this size,
which is the width a detected face box takes in the 112x112 aligned crop (80 px measured on
LFW): alignment from the scaled image therefore only ever shrinks a face, as it would from the
original, and no detail the embedder can use is lost. (A JPEG decoded by draft may stop at 3/4
of this side: 60 px, a 1.3x stretch for only the very smallest faces, whose landmarks are a few
pixels uncertain anyway.) At most 3200 x 3200 x 3 = 30 MB.
"""

ACCEPTED_FORMATS = ("JPEG", "PNG", "PPM", "BMP", "TIFF", "WEBP")
"""Pillow formats read (JPEG covers the multi-picture MPO files of some cameras, PPM covers PGM
and PBM; WEBP only where Pillow was built with it).

Only photo formats: the others Pillow knows (EPS through Ghostscript, fonts, icons, ...) add
decoders to attack and never hold a store's photos.
"""


class ImageError(LoyalnetError):
    """An image file could not be read, or an array is not an image this pipeline accepts."""


@dataclass(frozen=True, eq=False)
class LoadedImage:
    """A photo ready for the face pipeline, and how it relates to the photo as stored.

    Compared by identity (it holds an array, which has no single truth value for ``==``).
    """

    pixels: NDArray[np.uint8]
    """(h, w, 3) uint8 RGB, 0-255, longer side at most ``MAX_WORKING_SIDE``."""
    original_size: tuple[int, int]
    """(width, height) in pixels of the photo or array as given."""

    @property
    def scale(self) -> tuple[float, float]:
        """(x, y): original pixels per working pixel, each >= 1 (1.0 when not scaled).

        Multiply coordinates found in ``pixels`` by these to place them in the original photo.
        """
        height, width = self.pixels.shape[:2]
        return self.original_size[0] / width, self.original_size[1] / height


def load_image(source: ImageSource) -> NDArray[np.uint8]:
    """Load ``source`` as an RGB image, shape (H, W, 3), dtype uint8, values 0-255.

    Files: JPEG, PNG, PGM/PPM, BMP, TIFF, WebP; grayscale is replicated to three channels,
    palettes are expanded and an alpha channel is dropped (not composited); only the first
    frame of a multi-frame file is read.
    Arrays: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4, alpha ignored), either uint8 or a float
    array in [0, 1] (scaled by 255) or in [0, 255]. Arrays are copied, never aliased.

    An image whose longer side exceeds ``MAX_WORKING_SIDE`` comes back scaled down to it (aspect
    ratio kept); ``read_image`` also tells by how much.

    Raises:
        ImageError: the file is missing, not a regular file, not an image, truncated or corrupt,
            or has more than ``MAX_IMAGE_PIXELS`` pixels; or the array has another shape, dtype
            or value range, is empty, or has more than ``MAX_IMAGE_PIXELS`` pixels.
    """
    return read_image(source).pixels


def read_image(source: ImageSource) -> LoadedImage:
    """``load_image``, together with the original size, so results can be mapped back to it.

    Raises:
        ImageError: as ``load_image``.
    """
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, str | Path):
        return _from_file(Path(source))
    if isinstance(source, bytes):
        return _from_bytes(source)
    raise ImageError(
        f"cannot read an image from a {type(source).__name__}: pass a file path or a numpy "
        "array of shape (H, W) or (H, W, 3)."
    )


def describe_source(source: ImageSource) -> str:
    """A short label for messages and reports: the path, or the shape of an array."""
    if isinstance(source, np.ndarray):
        return f"array {'x'.join(str(side) for side in source.shape)}"
    if isinstance(source, bytes):
        return f"image of {len(source)} bytes"
    return str(source)


def working_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) an image of this size is scaled to: unchanged if its longer side is at
    most ``MAX_WORKING_SIDE``, else shrunk to that longer side with the aspect ratio kept
    (each side at least 1 pixel)."""
    longest = max(width, height)
    if longest <= MAX_WORKING_SIDE:
        return width, height
    factor = MAX_WORKING_SIDE / longest
    scaled_width = min(MAX_WORKING_SIDE, max(1, round(width * factor)))
    scaled_height = min(MAX_WORKING_SIDE, max(1, round(height * factor)))
    return scaled_width, scaled_height


def _too_large(what: str, width: int, height: int) -> ImageError:
    return ImageError(
        f"{what} is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels), more than "
        f"the {MAX_IMAGE_PIXELS / 1e6:.0f}-megapixel limit: scale it down (a face needs far "
        "fewer pixels) and try again."
    )


def _from_file(path: Path) -> LoadedImage:
    if path.is_dir():
        raise ImageError(f"{path} is a folder, not an image file: pass the photos inside it.")
    if not path.exists():
        raise ImageError(f"image file {path} does not exist: check the path.")
    if not path.is_file():
        raise ImageError(f"{path} is not a regular file: pass a JPEG or PNG photo.")
    try:
        return _decode(path, str(path))
    except PermissionError as exc:
        raise ImageError(
            f"cannot open {path}: permission denied; make the file readable for this user."
        ) from exc


def _from_bytes(data: bytes) -> LoadedImage:
    if not data:
        raise ImageError("the image is empty (0 bytes): send a JPEG or PNG photo.")
    return _decode(io.BytesIO(data), f"the image of {len(data)} bytes")


def _decode(file: Path | io.BytesIO, label: str) -> LoadedImage:
    """Decode an image file or in-memory file, named ``label`` in messages."""
    try:
        # Pillow warns (DecompressionBombWarning) between about 89 and 179 megapixels and
        # raises DecompressionBombError above; the stricter size check below refuses those
        # images with their size. Its other warnings on damaged files ("Corrupt EXIF data",
        # "Truncated File Read") tell the user nothing they can act on: the photo either
        # decodes or is refused. So warnings are silenced inside this block only (Python
        # restores its filters on leaving it; Pillow's MAX_IMAGE_PIXELS is never touched).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(file, formats=_openable_formats()) as img:
                width, height = img.size
                # Only the header has been read so far: refuse before decoding anything.
                if width * height > MAX_IMAGE_PIXELS:
                    raise _too_large(label, width, height)
                rgb = _decode_for_work(img)
    except (ImageError, PermissionError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(
            f"{label} declares far more pixels than the {MAX_IMAGE_PIXELS / 1e6:.0f}-megapixel "
            "limit (Pillow refuses it as a possible decompression bomb): use the camera's "
            f"original photo, at most {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels."
        ) from exc
    except Exception as exc:
        # Pillow's decoders signal corrupt data with many unrelated types (OSError for a
        # truncated file, SyntaxError, EOFError, struct.error, ValueError, IndexError, ...),
        # and a file too large to hold in memory gives MemoryError. Whatever goes wrong while
        # decoding this one file is this file's problem, reported for this photo alone.
        raise ImageError(
            f"cannot read {label} as an image ({exc.__class__.__name__}: the file is damaged, "
            "truncated or of another kind): use a JPEG, PNG or PGM photo."
        ) from exc
    return LoadedImage(np.array(rgb, dtype=np.uint8), (width, height))


def _decode_for_work(img: Image.Image) -> Image.Image:
    """Decode an opened, size-checked image to RGB at ``working_size``, with few full copies.

    A JPEG is decoded at the smallest 1/2, 1/4 or 1/8 scale whose longer side is still at
    least 3/4 of ``MAX_WORKING_SIDE`` (``Image.draft``: a 36 MP photo decodes in about a
    quarter of the time and memory); the smallest face the detector finds then keeps at least
    60 px for the 80 px it spans in the aligned crop. What is still larger than the working
    size is resized (bilinear with Pillow's antialiasing: the detector's own filter), in RGB
    or grayscale as decoded; other modes (palette, CMYK, 16-bit, alpha) become RGB first.
    """
    width, height = img.size
    target = working_size(width, height)
    if target != (width, height):
        floor = 0.75 * MAX_WORKING_SIDE / max(width, height)
        img.draft(None, (math.ceil(width * floor), math.ceil(height * floor)))
    img.load()
    work = img if img.mode in ("RGB", "L") else img.convert("RGB")
    target = working_size(*work.size)
    if work.size != target:
        work = work.resize(target, Image.Resampling.BILINEAR)
    return work if work.mode == "RGB" else work.convert("RGB")


@functools.cache
def _openable_formats() -> tuple[str, ...]:
    """``ACCEPTED_FORMATS`` that this Pillow build can open (``Image.open`` fails on others)."""
    Image.init()
    return tuple(name for name in ACCEPTED_FORMATS if name in Image.OPEN)


def _from_array(array: np.ndarray) -> LoadedImage:
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        channels = array.shape[2]
    elif array.ndim == 2:
        channels = 1
    else:
        raise ImageError(
            f"image array has shape {array.shape}: expected (H, W), (H, W, 1), (H, W, 3) or "
            "(H, W, 4)."
        )
    height, width = int(array.shape[0]), int(array.shape[1])
    if height == 0 or width == 0:
        raise ImageError(f"image array has shape {array.shape}: it holds no pixels.")
    if width * height > MAX_IMAGE_PIXELS:
        raise _too_large("the image array", width, height)
    pixels = _as_uint8(array)
    if channels == 1:
        pixels = pixels.reshape(height, width, 1).repeat(3, axis=2)
    elif channels == 4:
        pixels = pixels[:, :, :3]
    target = working_size(width, height)
    if target != (width, height):
        resized = Image.fromarray(np.ascontiguousarray(pixels), mode="RGB").resize(
            target, Image.Resampling.BILINEAR
        )
        pixels = np.array(resized, dtype=np.uint8)
    return LoadedImage(np.ascontiguousarray(pixels), (width, height))


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
