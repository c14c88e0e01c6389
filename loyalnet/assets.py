"""Where the shared data and the pretrained weights are, and proof that they are intact.

Everything under the data home is read-only for the project. It is found through one setting,
``LOYALTY_DATA_HOME``; without it, ``../shared`` beside the project root (or the current folder)
is used when it exists.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from loyalnet.errors import LoyalnetError

DATA_HOME_ENV = "LOYALTY_DATA_HOME"
_PROJECT_ROOT = Path(__file__).resolve().parent.parent


class AssetError(LoyalnetError):
    """A data file or weight file is missing or is not the expected one."""


@dataclass(frozen=True)
class Asset:
    """A file under the data home, pinned by its sha256."""

    relpath: str
    sha256: str
    description: str


MOBILEFACENET_WEIGHTS = Asset(
    "models/mobilefacenet_ms1m.pt",
    "90a00ba1d8b0b688af3deb731ed53dca582e6106805d1bc3cfdef55f570493f4",
    "MobileFaceNet face embedder weights",
)
MOBILEFACENET_ONNX = Asset(
    "models/mobilefacenet_ms1m.reference.onnx",
    "b7120c095d60094f28a4a54ba6a8bf51b297a6273fb40ef6350dfec1f63d9507",
    "MobileFaceNet reference ONNX graph (tests only)",
)
RETINAFACE_WEIGHTS = Asset(
    "models/retinaface_mobilenet0.25.pth",
    "2979b33ffafda5d74b6948cd7a5b9a7a62f62b949cef24e95fd15d2883a65220",
    "RetinaFace MobileNet-0.25 face detector weights",
)


def data_home() -> Path:
    """The folder that holds ``data/`` and ``models/``.

    Raises:
        AssetError: when ``LOYALTY_DATA_HOME`` names a missing folder, or it is unset and no
            ``../shared`` can be found.
    """
    configured = os.environ.get(DATA_HOME_ENV)
    if configured:
        home = Path(configured).expanduser()
        if not home.is_dir():
            raise AssetError(
                f"{DATA_HOME_ENV}={configured} is not a folder; point it at the shared data "
                "folder (the one holding data/ and models/)."
            )
        return home.resolve()
    for candidate in (_PROJECT_ROOT.parent / "shared", Path.cwd().parent / "shared"):
        if (candidate / "models").is_dir():
            return candidate.resolve()
    raise AssetError(
        f"cannot find the shared data folder: set {DATA_HOME_ENV} to the folder that holds "
        "data/ and models/ (by default ../shared beside the project)."
    )


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def asset_path(asset: Asset, home: Path | None = None) -> Path:
    """The verified path of ``asset``.

    Raises:
        AssetError: when the file is missing or its sha256 differs from the pinned one.
    """
    path = (home or data_home()) / asset.relpath
    if not path.is_file():
        raise AssetError(
            f"{asset.description} not found: expected {path} "
            f"(set {DATA_HOME_ENV} to the shared data folder)."
        )
    actual = sha256_of(path)
    if actual != asset.sha256:
        raise AssetError(
            f"{asset.description} at {path} has sha256 {actual[:12]}…, expected "
            f"{asset.sha256[:12]}…: the file is altered or the wrong one; restore the original."
        )
    return path


def dataset_dir(name: str, home: Path | None = None) -> Path:
    """``data/<name>`` under the data home, e.g. ``lfw``, ``orl``, ``croppedyale``.

    Raises:
        AssetError: when that folder does not exist.
    """
    path = (home or data_home()) / "data" / name
    if not path.is_dir():
        raise AssetError(
            f"data set '{name}' not found: expected the folder {path} "
            f"(set {DATA_HOME_ENV} to the shared data folder)."
        )
    return path
