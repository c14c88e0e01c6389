"""Every input to image loading is either a working-size RGB image or a clean ImageError.

Real photos from ../shared, crafted decompression bombs, damaged files, and property-based
random bytes, truncated files, random arrays and random Pillow images.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from crafted_images import png_claiming, upscaled_jpeg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from loyalnet.assets import dataset_dir
from store_node.face import FacePipeline, ImageError, load_image
from store_node.face.images import MAX_IMAGE_PIXELS, MAX_WORKING_SIDE, read_image, working_size

PERSON = "Gloria_Macapagal_Arroyo"


def _lfw(number: int) -> Path:
    return dataset_dir("lfw") / "images" / PERSON / f"{PERSON}_{number:04d}.jpg"


def assert_working_image(image: np.ndarray) -> None:
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
    assert 1 <= image.shape[0] <= MAX_WORKING_SIDE and 1 <= image.shape[1] <= MAX_WORKING_SIDE
    assert image.flags.c_contiguous and image.flags.writeable


# -- pixel limit -------------------------------------------------------------------------------


def test_decompression_bomb_png_is_refused_unread(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(50_000, 50_000))
    assert bomb.stat().st_size < 100
    with pytest.raises(ImageError, match="megapixel") as info:
        load_image(bomb)
    assert str(bomb) in str(info.value)


@pytest.mark.parametrize("side", [7_000, 10_000, 13_000])
def test_over_the_limit_is_refused_with_its_size_and_pillow_is_left_alone(
    tmp_path: Path, side: int
) -> None:
    # 49 MP is under Pillow's own guard, 100 MP in its warning band, 169 MP just under its error.
    photo = tmp_path / "huge.png"
    photo.write_bytes(png_claiming(side, side))
    pillow_limit = Image.MAX_IMAGE_PIXELS
    filters = list(warnings.filters)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning escaping would raise here
        with pytest.raises(ImageError, match=f"{side}x{side} pixels"):
            load_image(photo)
    assert pillow_limit == Image.MAX_IMAGE_PIXELS
    assert warnings.filters == filters


def test_array_over_the_limit_is_refused() -> None:
    side = int(MAX_IMAGE_PIXELS**0.5) + 1
    huge = np.broadcast_to(np.zeros((1, 1, 3), dtype=np.uint8), (side, side, 3))  # no memory
    with pytest.raises(ImageError, match="megapixel"):
        load_image(huge)


def test_large_array_is_scaled_to_the_working_size() -> None:
    wide = np.full((10, 4 * MAX_WORKING_SIDE // 3, 3), 200, dtype=np.uint8)
    loaded = read_image(wide)
    assert loaded.pixels.shape == (8, MAX_WORKING_SIDE, 3)
    assert loaded.original_size == (wide.shape[1], 10)
    assert loaded.scale == pytest.approx((4 / 3, 10 / 8), rel=1e-3)
    assert int(loaded.pixels[4, 100, 0]) == 200


def test_working_size_keeps_small_images_and_the_aspect_ratio() -> None:
    assert working_size(640, 480) == (640, 480)
    assert working_size(MAX_WORKING_SIDE, 10) == (MAX_WORKING_SIDE, 10)
    assert working_size(6400, 4800) == (MAX_WORKING_SIDE, MAX_WORKING_SIDE * 3 // 4)
    assert working_size(40_000_000, 1) == (MAX_WORKING_SIDE, 1)


# -- large real photos -------------------------------------------------------------------------


def test_large_photo_finds_the_same_face_in_its_own_pixels(tmp_path: Path) -> None:
    pipeline = FacePipeline.load()
    original = pipeline.encode(_lfw(6))[0]
    side = 6000
    big = upscaled_jpeg(tmp_path / "big.jpg", _lfw(6), side)
    loaded = read_image(big)
    assert max(loaded.pixels.shape[:2]) <= MAX_WORKING_SIDE and loaded.original_size == (side,) * 2
    found = pipeline.encode(big)[0]
    factor = side / 250
    # Boxes and landmarks come back in the 6000-pixel photo's coordinates. The network's own
    # answer varies a little with the input's scale and blur; a mapping error would be 2x+.
    face_width = (original.face.box[2] - original.face.box[0]) * factor
    expected_box = np.array(original.face.box) * factor
    np.testing.assert_allclose(found.face.box, expected_box, atol=0.06 * face_width)
    expected_marks = original.face.landmarks * factor
    np.testing.assert_allclose(found.face.landmarks, expected_marks, atol=0.06 * face_width)
    # Aligned from the scaled image, the crop is as good as from the original.
    assert float(found.embedding @ original.embedding) > 0.95
    # detect and align on the same path agree with encode.
    faces = pipeline.detect(big)
    np.testing.assert_allclose(faces[0].box, found.face.box, atol=1e-3)
    np.testing.assert_array_equal(pipeline.align(big, faces[:1])[0], found.crop)


_PEAK_SCRIPT = """
import json, resource, sys
from store_node.face.images import load_image
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
image = load_image(sys.argv[1])
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"shape": list(image.shape), "extra_mb": (after - before) / 1024}))
"""


def test_large_jpeg_loads_in_bounded_memory(tmp_path: Path) -> None:
    # A 36-megapixel JPEG is 108 MB of RGB at full size; drafted to half size it is 27 MB.
    big = upscaled_jpeg(tmp_path / "big.jpg", _lfw(1), 6000)
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(big)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    report = json.loads(done.stdout)
    assert max(report["shape"][:2]) <= MAX_WORKING_SIDE
    assert report["extra_mb"] < 120, report


# -- files that are not photos -----------------------------------------------------------------


def test_files_that_are_not_photos_are_refused(tmp_path: Path) -> None:
    real = _lfw(1).read_bytes()
    cases = {
        "empty.jpg": b"",
        "truncated.jpg": real[: len(real) // 3],
        "header_only.jpg": real[:200],
        "text.png": b"hello, not a picture",
        "gif_is_not_a_photo_format.gif": b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageError) as info:
            load_image(tmp_path / name)
        assert str(tmp_path / name) in str(info.value), name
    folder = tmp_path / "a_folder.jpg"
    folder.mkdir()
    with pytest.raises(ImageError, match="folder"):
        load_image(folder)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_named_pipe_is_refused_without_blocking(tmp_path: Path) -> None:
    pipe = tmp_path / "camera.jpg"
    os.mkfifo(pipe)
    with pytest.raises(ImageError, match="not a regular file"):
        load_image(pipe)


# -- property-based: never anything but an image or an ImageError ------------------------------

_FAST = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _image_or_image_error(source: Path | np.ndarray) -> np.ndarray | None:
    try:
        image = load_image(source)
    except ImageError:
        return None
    assert_working_image(image)
    return image


@_FAST
@given(data=st.binary(max_size=2048))
def test_random_bytes_give_an_image_or_image_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "random.jpg"
    path.write_bytes(data)
    _image_or_image_error(path)


_REAL_FILES = [
    ("lfw", f"images/{PERSON}/{PERSON}_0001.jpg"),
    ("orl", "s1/1.png"),
    ("croppedyale", "yaleB01/yaleB01_P00A+000E+00.png"),
]


@_FAST
@given(
    which=st.sampled_from(_REAL_FILES),
    cut=st.floats(min_value=0.0, max_value=1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=4),
)
def test_damaged_real_files_give_an_image_or_image_error(
    tmp_path: Path, which: tuple[str, str], cut: float, flips: list[tuple[float, int]]
) -> None:
    data = bytearray((dataset_dir(which[0]) / which[1]).read_bytes())
    data = data[: int(len(data) * cut)]
    for where, value in flips:
        if data:
            data[min(len(data) - 1, int(where * len(data)))] = value
    path = tmp_path / Path(which[1]).name
    path.write_bytes(bytes(data))
    _image_or_image_error(path)


_DTYPES = st.sampled_from(
    [np.uint8, np.uint16, np.int32, np.float16, np.float32, np.float64, np.bool_, np.complex64]
)
_SMALL_SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)
# Thin but long: over the working side, cheap to build, exercises scaling of arrays.
_LONG_SHAPES = st.tuples(
    st.integers(1, 3), st.integers(MAX_WORKING_SIDE - 2, 2 * MAX_WORKING_SIDE)
).flatmap(lambda hw: st.sampled_from([hw, (*hw, 1), (*hw, 3), (*hw, 4), (hw[1], hw[0], 3)]))


@_FAST
@given(array=hnp.arrays(_DTYPES, st.one_of(_SMALL_SHAPES, _LONG_SHAPES)))
def test_random_arrays_give_an_image_or_image_error(array: np.ndarray) -> None:
    image = _image_or_image_error(array)
    if image is not None:
        assert working_size(array.shape[1], array.shape[0]) == (image.shape[1], image.shape[0])


_MODES = st.sampled_from(["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I", "I;16", "F"])
_FORMATS = st.sampled_from([("PNG", ".png"), ("JPEG", ".jpg"), ("TIFF", ".tif"), ("BMP", ".bmp")])


@_FAST
@given(
    mode=_MODES,
    form=_FORMATS,
    size=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_pillow_images_load_at_their_size(
    tmp_path: Path, mode: str, form: tuple[str, str], size: tuple[int, int], seed: int
) -> None:
    noise = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(noise, "RGB").convert(mode)
    path = tmp_path / f"random{form[1]}"
    try:
        img.save(path, form[0])
    except (OSError, ValueError, KeyError):
        return  # Pillow cannot write this mode in this format: nothing to read back
    image = _image_or_image_error(path)
    if image is not None:
        assert (image.shape[1], image.shape[0]) == size
