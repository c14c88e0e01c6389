"""The face API the rest of loyalnet calls: image in, face boxes, crops and embeddings out.

pipeline = FacePipeline.load()
encodings = pipeline.encode("photo.jpg")          # [] when there is no face
if encodings:
    vector = encodings[0].embedding              # (128,) float32, unit length
    similarity = float(vector @ other_vector)    # cosine similarity in [-1, 1]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from store_node.face.alignment import ALIGNED_SIZE, align_face
from store_node.face.detector import Face, FaceDetector
from store_node.face.embedder import DEFAULT_FLIP, FaceEmbedder
from store_node.face.images import ImageSource, LoadedImage, read_image
from store_node.face.mobilefacenet import MobileFaceNet
from store_node.face.weights import (
    MOBILEFACENET_VERSION,
    EmbedderBackend,
    load_mobilefacenet,
    load_retinaface,
    prepare_detector,
    prepare_embedder,
)


@dataclass(frozen=True, eq=False)
class FaceEncoding:
    """One face found in an image, ready to store or compare."""

    face: Face
    """Where the face is: box, score, landmarks in the source image's pixels."""
    crop: NDArray[np.uint8]
    """(112, 112, 3) uint8 RGB crop aligned to the ArcFace template."""
    embedding: NDArray[np.float32]
    """(128,) float32 of unit length; compare two by their dot product (cosine similarity)."""


class FacePipeline:
    """Detect, align and embed faces; keeps no state between calls.

    Build it with ``FacePipeline.load()``; the constructor takes ready parts for tests and
    custom set-ups.
    """

    def __init__(self, detector: FaceDetector, embedder: FaceEmbedder) -> None:
        self.detector = detector
        self.embedder = embedder

    @classmethod
    def load(
        cls,
        home: Path | None = None,
        *,
        flip: bool = DEFAULT_FLIP,
        threads: int | None = None,
        backend: EmbedderBackend = "torch",
    ) -> FacePipeline:
        """The pipeline with the pretrained, hash-checked weights, optimised for the CPU.

        Args:
            home: the shared data folder holding ``models/``; None finds it as
                ``loyalnet.assets.data_home()`` does.
            flip: embed each face and its mirror image and average them (twice the cost).
            threads: if given, sets torch's CPU thread count for the whole process.
            backend: the runtime of both networks: "torch" (embedding ~5 ms per face on one
                thread) or "onnxruntime" (~3 ms; the graphs are exported from the same modules
                and cached, see ``store_node.face.onnx_graphs``). Both give the same
                embeddings and detections to ~1e-5, so templates are interchangeable.

        Raises:
            AssetError: a weight file is missing or altered.
            WeightsError: the onnxruntime backend was asked for but is not installed.
        """
        return cls.with_embedder(
            load_mobilefacenet(home),
            MOBILEFACENET_VERSION,
            home,
            flip=flip,
            threads=threads,
            backend=backend,
        )

    @classmethod
    def with_embedder(
        cls,
        network: MobileFaceNet,
        model_version: str,
        home: Path | None = None,
        *,
        flip: bool = DEFAULT_FLIP,
        threads: int | None = None,
        backend: EmbedderBackend = "torch",
    ) -> FacePipeline:
        """The pretrained detector with ``network`` as the embedder, named ``model_version``.

        For a fine-tuned embedder (a store's adopted model); arguments as for :meth:`load`.
        """
        if threads is not None:
            torch.set_num_threads(threads)
        detector = FaceDetector(prepare_detector(load_retinaface(home), backend))
        embedder = FaceEmbedder(
            prepare_embedder(network, backend), model_version=model_version, flip=flip
        )
        return cls(detector, embedder)

    @property
    def model_version(self) -> str:
        """Names the embedding model, e.g. "mobilefacenet-ms1m-90a00ba1"."""
        return self.embedder.model_version

    def detect(self, image: ImageSource) -> list[Face]:
        """Faces in the image, largest first; [] when there is none.

        Boxes and landmarks are in the pixels of ``image`` as given, also when an image larger
        than ``MAX_WORKING_SIDE`` was scaled down to find them.

        Raises:
            ImageError: the source cannot be read as an image, or is over the pixel limit.
        """
        loaded = read_image(image)
        return _to_original(loaded, self.detector.detect(loaded.pixels))

    def align(self, image: ImageSource, faces: Sequence[Face]) -> NDArray[np.uint8]:
        """(len(faces), 112, 112, 3) uint8 RGB crops, one per face, in the same order.

        ``faces`` are in the pixels of ``image`` as given, as ``detect`` returns them.

        Raises:
            ImageError: the source cannot be read as an image, or is over the pixel limit.
        """
        loaded = read_image(image)
        sx, sy = loaded.scale
        if (sx, sy) != (1.0, 1.0):
            faces = [face.rescaled(1.0 / sx, 1.0 / sy) for face in faces]
        return _align_all(loaded.pixels, faces)

    def embed(self, crops: NDArray[np.uint8]) -> NDArray[np.float32]:
        """(N, 128) unit-length float32 embeddings of (N, 112, 112, 3) aligned crops."""
        return self.embedder.embed(crops)

    def encode(self, source: ImageSource, *, all_faces: bool = False) -> list[FaceEncoding]:
        """Detect, align and embed: the largest face only, or every face with ``all_faces``.

        Returns [] when no face is found. Each encoding's face is in the pixels of ``source``
        as given; a large image is scaled down first (see ``read_image``) and its faces
        aligned from the scaled image, which keeps enough pixels for the 112x112 crop.

        Raises:
            ImageError: the source cannot be read as an image, or is over the pixel limit.
        """
        loaded = read_image(source)
        faces = self.detector.detect(loaded.pixels)
        if not all_faces:
            faces = faces[:1]
        if not faces:
            return []
        crops = _align_all(loaded.pixels, faces)
        embeddings = self.embed(crops)
        return [
            FaceEncoding(face=face, crop=crop, embedding=vector)
            for face, crop, vector in zip(
                _to_original(loaded, faces), crops, embeddings, strict=True
            )
        ]


def _to_original(loaded: LoadedImage, faces: list[Face]) -> list[Face]:
    """Faces found in ``loaded.pixels``, placed in the pixels of the image as given."""
    sx, sy = loaded.scale
    if (sx, sy) == (1.0, 1.0):
        return faces
    return [face.rescaled(sx, sy) for face in faces]


def _align_all(image_rgb: NDArray[np.uint8], faces: Sequence[Face]) -> NDArray[np.uint8]:
    crops = np.empty((len(faces), ALIGNED_SIZE, ALIGNED_SIZE, 3), dtype=np.uint8)
    for i, face in enumerate(faces):
        crops[i] = align_face(image_rgb, face.landmarks)
    return crops
