"""Labeled Faces in the Wild (deep-funneled, 250x250 JPEG): identities and the View 2 pairs.

Layout under the data home: ``data/lfw/images/<Name>/<Name>_<nnnn>.jpg`` (image numbers start at
1 and are zero-padded to 4 digits) and ``data/lfw/pairs.txt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loyalnet.assets import AssetError, dataset_dir
from store_node.datasets._folders import people_folders

LFW_NAME = "lfw"


@dataclass(frozen=True)
class Pair:
    """One View 2 verification pair.

    Attributes:
        fold: the fold the pair belongs to, 0..9 in the official file.
        left: path of the first image.
        right: path of the second image.
        same: True when both images show the same person.
    """

    fold: int
    left: Path
    right: Path
    same: bool


def lfw_image_path(images: Path, name: str, number: int) -> Path:
    """The path of image ``number`` (1-based) of person ``name`` under the ``images`` folder."""
    return images / name / f"{name}_{number:04d}.jpg"


def lfw_people(home: Path | None = None, min_images: int = 1) -> dict[str, list[Path]]:
    """Every LFW person with at least ``min_images`` images, name -> image paths.

    Names are in sorted order and each person's paths are sorted by file name (which is image
    number order), so the result is the same on every run.

    Raises:
        AssetError: when ``data/lfw/images`` is missing under the data home.
    """
    images = _images_dir(home)
    people = people_folders(images, ".jpg")
    return {name: paths for name, paths in people.items() if len(paths) >= min_images}


def lfw_pairs(home: Path | None = None) -> list[Pair]:
    """The official View 2 pairs (6,000 in the shipped file), in file order.

    ``pairs.txt`` starts with ``<folds> <n>``; then, per fold, ``n`` same-person lines
    ``Name i j`` followed by ``n`` different-person lines ``Name1 i Name2 j``.

    Raises:
        AssetError: when the file is missing or malformed, or names an image that is not there.
    """
    root = dataset_dir(LFW_NAME, home)
    images = _images_dir(home)
    pairs_file = root / "pairs.txt"
    if not pairs_file.is_file():
        raise AssetError(f"LFW pairs file not found: expected {pairs_file}; restore pairs.txt.")
    lines = [line.split() for line in pairs_file.read_text().splitlines() if line.strip()]
    try:
        folds, per_fold = (int(field) for field in lines[0])
    except (IndexError, ValueError) as error:
        raise AssetError(
            f"{pairs_file} should start with '<folds> <pairs per class>'; restore the original."
        ) from error
    body = lines[1:]
    if len(body) != folds * 2 * per_fold:
        raise AssetError(
            f"{pairs_file} has {len(body)} pair lines, expected {folds * 2 * per_fold} "
            f"({folds} folds x 2 x {per_fold}); restore the original."
        )
    pairs = [
        _parse_pair(fields, index // (2 * per_fold), images, pairs_file)
        for index, fields in enumerate(body)
    ]
    missing = sorted({p for pair in pairs for p in (pair.left, pair.right) if not p.is_file()})
    if missing:
        raise AssetError(
            f"{len(missing)} images named in {pairs_file} are missing (first: {missing[0]}); "
            "restore the LFW images folder."
        )
    return pairs


def _images_dir(home: Path | None) -> Path:
    images = dataset_dir(LFW_NAME, home) / "images"
    if not images.is_dir():
        raise AssetError(f"LFW images not found: expected the folder {images}.")
    return images


def _parse_pair(fields: list[str], fold: int, images: Path, source: Path) -> Pair:
    try:
        if len(fields) == 3:
            name, first, second = fields
            return Pair(
                fold,
                lfw_image_path(images, name, int(first)),
                lfw_image_path(images, name, int(second)),
                same=True,
            )
        if len(fields) == 4:
            name1, first, name2, second = fields
            return Pair(
                fold,
                lfw_image_path(images, name1, int(first)),
                lfw_image_path(images, name2, int(second)),
                same=False,
            )
    except ValueError:
        pass
    raise AssetError(f"{source}: cannot read the pair line '{' '.join(fields)}'.")
