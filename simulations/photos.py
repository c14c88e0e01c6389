"""Photos as a store's camera takes them, found and aligned once for the whole simulation.

Detection and alignment do not depend on the embedder being fine-tuned (the detector is never
trained), so every photo of an experiment goes through its camera, the detector and the
aligner exactly once, here, and every model is evaluated on the same 112x112 crops. That is
also what makes "same seed, same numbers" hold: a camera's sensor noise is drawn from a
generator seeded by the experiment's seed, the photo and the condition, not by the order in
which photos happen to be processed.

A photo in which the store's detector finds no face has no crop (``None``): the store would not
recognise anyone in it either. Under the harsh lighting of Extended Yale B that happens, and
it is part of what the simulation measures.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from store_node.bench.face_choice import FaceChooser
from store_node.cameras import CameraCondition, through_camera
from store_node.enrolment import prominent_faces
from store_node.face import FacePipeline, load_image
from store_node.face.detector import Face

Crop = NDArray[np.uint8]
"""(112, 112, 3) uint8 RGB face aligned to the ArcFace template."""

YALE = "yale"
"""The condition of Extended Yale B photos: real lighting, no simulated camera."""


@dataclass(frozen=True)
class Shot:
    """One photo as seen by one kind of camera."""

    path: Path
    condition: str


def camera_image(shot: Shot, seed: int) -> NDArray[np.uint8]:
    """The RGB image a camera of ``shot.condition`` delivers of ``shot.path``.

    Raises:
        ImageError: the photo cannot be read.
    """
    image = load_image(shot.path)
    if shot.condition == YALE:
        return image
    return through_camera(image, CameraCondition(shot.condition), _noise(shot, seed))


class PhotoBook:
    """The aligned crop of every photo the simulation uses, computed on first request.

    Args:
        pipeline: detects and aligns (its embedder is not used here).
        seed: the experiment's seed, for the cameras' sensor noise.
    """

    def __init__(self, pipeline: FacePipeline, seed: int) -> None:
        self._pipeline = pipeline
        self._seed = seed
        self._crops: dict[Shot, Crop | None] = {}
        self._chooser = FaceChooser(pipeline)

    def __len__(self) -> int:
        return len(self._crops)

    def missing(self, shots: Iterable[Shot]) -> list[Shot]:
        """The shots not aligned yet, each once, in the order given."""
        return list(dict.fromkeys(shot for shot in shots if shot not in self._crops))

    def align(
        self,
        shots: Iterable[Shot],
        *,
        benchmark: bool = False,
        advance: Callable[[int], None] | None = None,
    ) -> None:
        """Align every shot not aligned yet.

        Args:
            benchmark: choose faces as the LFW benchmark does (:class:`FaceChooser`: the
                labelled face, with a retry and a fallback, so every pair is scored) instead
                of as a store does (the largest face, or none).
            advance: called with 1 after each photo, for a progress bar.
        """
        for shot in self.missing(shots):
            image = camera_image(shot, self._seed)
            faces = self._pipeline.detect(image)
            face: Face | None
            if benchmark:
                face = self._chooser.choose(image, faces).face
            else:
                found = prominent_faces(faces)
                face = found[0] if found else None
            self._crops[shot] = None if face is None else self._pipeline.align(image, [face])[0]
            if advance is not None:
                advance(1)

    def crop(self, shot: Shot) -> Crop | None:
        """The shot's crop, or None when no face was found.

        Raises:
            KeyError: the shot was never aligned (a bug in the caller).
        """
        return self._crops[shot]


def _noise(shot: Shot, seed: int) -> np.random.Generator:
    # Python's hash() is salted per process; a digest keeps the noise the same across runs.
    digest = hashlib.sha256(f"{seed}|{shot.path.name}|{shot.condition}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))
