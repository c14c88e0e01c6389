"""The face pipeline end to end on real images: LFW, ORL and Cropped Yale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from loyalnet.assets import dataset_dir
from store_node.face import Face, FacePipeline, ImageError, load_image
from store_node.face.alignment import ARCFACE_TEMPLATE, align_face, estimate_similarity
from store_node.face.detector import FaceDetector
from store_node.face.weights import fuse_for_inference, load_retinaface

LFW_SINGLES = ("George_W_Bush", "Colin_Powell", "Donald_Rumsfeld", "Serena_Williams")
# People with at least two LFW images, for same-versus-different similarity.
LFW_PAIRS = ("George_W_Bush", "Colin_Powell", "Tony_Blair", "Donald_Rumsfeld", "Serena_Williams")


@pytest.fixture(scope="module")
def pipeline() -> FacePipeline:
    return FacePipeline.load()


def _lfw(name: str, number: int = 1) -> Path:
    return dataset_dir("lfw") / "images" / name / f"{name}_{number:04d}.jpg"


def _assert_plausible(face: Face) -> None:
    x1, y1, x2, y2 = face.box
    marks = face.landmarks
    assert marks.shape == (5, 2) and marks.dtype == np.float32
    left_eye, right_eye, nose, mouth_left, mouth_right = marks
    assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    assert np.all((marks[:, 0] > x1) & (marks[:, 0] < x2))
    assert np.all((marks[:, 1] > y1) & (marks[:, 1] < y2))
    assert 0.9 < face.score <= 1.0
    assert face.area == pytest.approx((x2 - x1) * (y2 - y1))


@pytest.mark.parametrize("name", LFW_SINGLES)
def test_lfw_face_has_plausible_landmarks(pipeline: FacePipeline, name: str) -> None:
    faces = pipeline.detect(_lfw(name))
    assert len(faces) == 1
    _assert_plausible(faces[0])


@pytest.mark.parametrize("name", ["s1/1.png", "s17/5.png", "s40/10.png"])
def test_orl_tight_crops_give_a_face(pipeline: FacePipeline, name: str) -> None:
    encodings = pipeline.encode(dataset_dir("orl") / name)
    assert len(encodings) == 1
    _assert_plausible(encodings[0].face)


@pytest.mark.parametrize(
    "name",
    ["yaleB01/yaleB01_P00A+000E+00.png", "yaleB05/yaleB05_P00A+010E-20.png"],
)
def test_yale_tight_crops_give_a_face(pipeline: FacePipeline, name: str) -> None:
    encodings = pipeline.encode(dataset_dir("croppedyale") / name)
    assert len(encodings) == 1
    _assert_plausible(encodings[0].face)


def test_second_look_with_a_frame_finds_a_face_that_fills_the_image(
    pipeline: FacePipeline,
) -> None:
    # This side-lit Yale crop is missed as it is and found once framed in grey.
    image = load_image(dataset_dir("croppedyale") / "yaleB29" / "yaleB29_P00A-060E-20.png")
    single_look = FaceDetector(fuse_for_inference(load_retinaface()), retry_border=0.0)
    assert single_look.detect(image) == []
    faces = pipeline.detect(image)
    assert len(faces) == 1
    _assert_plausible(faces[0])
    # Coordinates are those of the unframed image: the face fills it, the frame is not in it.
    height, width = image.shape[:2]
    marks = faces[0].landmarks
    assert np.all((marks >= 0) & (marks < np.array([width, height])))
    x1, y1, x2, y2 = faces[0].box
    assert x1 < width / 2 < x2 and y1 < height / 2 < y2
    assert (x2 - x1) > width / 2


def test_coordinates_survive_downscaling_and_framing(pipeline: FacePipeline) -> None:
    image = load_image(_lfw("Colin_Powell"))
    framed = np.pad(image, ((100, 100), (300, 300), (0, 0)), constant_values=118)
    # 850 pixels wide, run at 500: the face is seen at 59% size and mapped back.
    small_budget = FaceDetector(fuse_for_inference(load_retinaface()), max_side=500)
    direct, via_downscale = pipeline.detect(image)[0], small_budget.detect(framed)[0]
    offset = np.array([300.0, 100.0], dtype=np.float32)
    face_width = direct.box[2] - direct.box[0]
    # The network's own answer varies a little with scale; a mapping error would be far larger.
    np.testing.assert_allclose(
        via_downscale.landmarks - offset, direct.landmarks, atol=0.06 * face_width
    )


@pytest.mark.parametrize("kind", ["grey", "noise"])
def test_image_without_face_gives_nothing(pipeline: FacePipeline, kind: str) -> None:
    if kind == "grey":
        image = np.full((240, 320, 3), 128, dtype=np.uint8)
    else:
        image = np.random.default_rng(7).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    assert pipeline.detect(image) == []
    assert pipeline.encode(image) == []


def test_two_faces_side_by_side(pipeline: FacePipeline) -> None:
    left = load_image(_lfw("Gerhard_Schroeder"))
    right = load_image(_lfw("Serena_Williams"))
    # Shrink one so the two faces differ clearly in size: the larger comes first.
    small = np.asarray(Image.fromarray(right).resize((200, 200)))
    canvas = np.full((250, 450, 3), 0, dtype=np.uint8)
    canvas[:, :250] = left
    canvas[25:225, 250:] = small
    every = pipeline.encode(canvas, all_faces=True)
    assert len(every) == 2
    assert every[0].face.area > every[1].face.area
    assert every[0].face.box[2] < 250 < every[1].face.box[0]
    largest = pipeline.encode(canvas)
    assert len(largest) == 1
    assert largest[0].face.box == every[0].face.box
    for encoding in every:
        assert encoding.crop.shape == (112, 112, 3) and encoding.crop.dtype == np.uint8
        assert encoding.embedding.shape == (128,) and encoding.embedding.dtype == np.float32
        assert float(np.linalg.norm(encoding.embedding)) == pytest.approx(1.0, abs=1e-5)


def test_align_and_embed_shapes(pipeline: FacePipeline) -> None:
    path = _lfw("Colin_Powell")
    faces = pipeline.detect(path)
    crops = pipeline.align(path, faces)
    assert crops.shape == (len(faces), 112, 112, 3) and crops.dtype == np.uint8
    embeddings = pipeline.embed(crops)
    assert embeddings.shape == (len(faces), 128) and embeddings.dtype == np.float32
    assert pipeline.embed(np.zeros((0, 112, 112, 3), dtype=np.uint8)).shape == (0, 128)
    assert pipeline.model_version == "mobilefacenet-ms1m-90a00ba1"


def test_same_person_is_closer_than_different_people(pipeline: FacePipeline) -> None:
    vectors: dict[str, list[NDArray[np.float32]]] = {}
    for name in LFW_PAIRS:
        vectors[name] = [pipeline.encode(_lfw(name, n))[0].embedding for n in (1, 2)]
    same = [float(a @ b) for a, b in vectors.values()]
    different = [
        float(vectors[p][0] @ vectors[q][1]) for p in LFW_PAIRS for q in LFW_PAIRS if p != q
    ]
    assert min(same) > max(different)
    assert min(same) > 0.4 and max(different) < 0.4


def test_flip_changes_little(pipeline: FacePipeline) -> None:
    path = _lfw("Colin_Powell", 2)
    crops = pipeline.align(path, pipeline.detect(path))
    plain = pipeline.embedder.embed(crops, flip=False)
    flipped = pipeline.embedder.embed(crops, flip=True)
    assert float(plain[0] @ flipped[0]) > 0.9
    assert float(np.linalg.norm(flipped[0])) == pytest.approx(1.0, abs=1e-5)


def test_similarity_estimate_recovers_a_known_transform() -> None:
    angle, scale, shift = 0.3, 1.7, np.array([3.0, -4.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = ARCFACE_TEMPLATE.astype(np.float64)
    dst = src @ (scale * rotation).T + shift
    matrix = estimate_similarity(src, dst)
    np.testing.assert_allclose(matrix[:, :2], scale * rotation, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-9)


def test_align_puts_landmarks_on_the_template() -> None:
    # A bright dot at the nose tip of a face scaled 1.5x must land on the template's nose.
    image = np.zeros((200, 200, 3), dtype=np.uint8)
    landmarks = (ARCFACE_TEMPLATE - 56.0) * 1.5 + np.array([90.0, 110.0], dtype=np.float32)
    nose = np.rint(landmarks[2]).astype(int)
    landmarks[2] = nose
    image[nose[1], nose[0]] = 255
    crop = align_face(image, landmarks)
    row, col = np.unravel_index(int(crop[..., 0].argmax()), crop.shape[:2])
    assert abs(col - ARCFACE_TEMPLATE[2, 0]) < 1.0 and abs(row - ARCFACE_TEMPLATE[2, 1]) < 1.0


@pytest.mark.parametrize(
    ("mode", "suffix"), [("L", ".pgm"), ("L", ".png"), ("RGB", ".png"), ("RGBA", ".png")]
)
def test_load_image_reads_grey_and_colour_files(tmp_path: Path, mode: str, suffix: str) -> None:
    pixels = np.arange(12 * 10 * len(mode), dtype=np.uint8).reshape(12, 10, len(mode))
    path = tmp_path / f"image{suffix}"
    Image.fromarray(pixels.squeeze(2) if mode == "L" else pixels, mode=mode).save(path)
    loaded = load_image(path)
    assert loaded.shape == (12, 10, 3) and loaded.dtype == np.uint8
    expected = np.repeat(pixels, 3, axis=2) if mode == "L" else pixels[:, :, :3]
    np.testing.assert_array_equal(loaded, expected)
    assert load_image(str(path)).shape == (12, 10, 3)


def test_grey_pgm_face_is_detected(pipeline: FacePipeline, tmp_path: Path) -> None:
    grey = Image.open(dataset_dir("orl") / "s2" / "1.png").convert("L")
    path = tmp_path / "face.pgm"
    grey.save(path)
    assert len(pipeline.encode(path)) == 1


def test_load_image_accepts_arrays() -> None:
    grey = np.full((4, 5), 7, dtype=np.uint8)
    assert load_image(grey).shape == (4, 5, 3)
    assert load_image(grey[:, :, None]).shape == (4, 5, 3)
    unit = np.full((4, 5, 3), 0.5, dtype=np.float32)
    assert int(load_image(unit)[0, 0, 0]) == 128
    wide = np.full((4, 5, 3), 200.0)
    assert int(load_image(wide)[0, 0, 0]) == 200


def test_load_image_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nobody.jpg"
    with pytest.raises(ImageError) as info:
        load_image(missing)
    assert str(missing) in str(info.value) and "does not exist" in str(info.value)


def test_load_image_non_image_file(tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    with pytest.raises(ImageError) as info:
        load_image(text)
    assert str(text) in str(info.value) and "JPEG, PNG or PGM" in str(info.value)


@pytest.mark.parametrize(
    ("array", "reason"),
    [
        (np.zeros((4, 5, 2), dtype=np.uint8), "shape"),
        (np.zeros((4,), dtype=np.uint8), "shape"),
        (np.zeros((0, 5, 3), dtype=np.uint8), "no pixels"),
        (np.zeros((4, 5, 3), dtype=np.int32), "dtype"),
        (np.full((4, 5, 3), 300.0), "scale it"),
        (np.full((4, 5, 3), np.nan), "NaN"),
    ],
)
def test_load_image_bad_array(array: np.ndarray, reason: str) -> None:
    with pytest.raises(ImageError, match=reason):
        load_image(array)


def test_load_image_rejects_other_types() -> None:
    with pytest.raises(ImageError, match="file path or a numpy array"):
        load_image(42)  # type: ignore[arg-type]
