"""Which face of an LFW image to use, and what to do when the detector finds none.

LFW deep-funneled images are 250x250 crops centred on the labelled person; other people may be
visible too, so the detection nearest the image centre is the labelled one.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
from numpy.typing import NDArray

from store_node.face import Face, FacePipeline
from store_node.face.alignment import ALIGNED_SIZE, ARCFACE_TEMPLATE

LOW_SCORE_THRESHOLD = 0.02
"""Detector score threshold of the retry: the usual setting for evaluating RetinaFace."""

LFW_SIDE = 250
"""Side of an LFW image in pixels."""
# Median similarity transform from the ArcFace template onto the landmarks of the centred face,
# measured with the default detector on all 7,701 View 2 images (scale 1.124, offset (60.7,
# 55.9) px; 10-90 % on a sample: scale 1.04-1.20, x 54-67, y 49-63): the face sits a little
# above the image centre.
_FALLBACK_SCALE = 1.12
_FALLBACK_OFFSET = (61.0, 56.0)


class FaceSource(Enum):
    """How the face used for an image was found."""

    DETECTED = "detected"
    """Found at the detector's own score threshold."""
    LOW_THRESHOLD = "low_threshold"
    """Found only by the retry at ``LOW_SCORE_THRESHOLD``."""
    CENTRE_FALLBACK = "centre_fallback"
    """Not found at all: the template landmarks placed where LFW's centred face usually is."""


@dataclass(frozen=True, eq=False)
class ChosenFace:
    """The face to align for one image and how it was found."""

    face: Face
    source: FaceSource


def central_face(faces: Sequence[Face], width: int, height: int) -> Face:
    """The face whose box centre is nearest the image centre (ties: the earlier, larger one).

    Args:
        faces: at least one detection, in pixels of a ``width`` x ``height`` image.

    Raises:
        ValueError: when ``faces`` is empty.
    """
    if not faces:
        raise ValueError("central_face needs at least one face")
    centre_x, centre_y = width / 2.0, height / 2.0

    def distance(face: Face) -> float:
        x1, y1, x2, y2 = face.box
        return float(np.hypot((x1 + x2) / 2.0 - centre_x, (y1 + y2) / 2.0 - centre_y))

    return min(faces, key=distance)


def centre_fallback_face(width: int, height: int) -> Face:
    """A stand-in face, score 0, for an image in which none was detected.

    In a 250x250 image its landmarks are the 112x112 ArcFace template scaled by 1.12 and shifted
    by (61, 56) px: the median placement of detected faces in LFW. Another image size gets the
    same placement inside the largest centred square, scaled to that square's side.
    """
    factor = min(width, height) / LFW_SIDE
    square_x = (width - LFW_SIDE * factor) / 2.0
    square_y = (height - LFW_SIDE * factor) / 2.0
    shift = np.array(
        [square_x + _FALLBACK_OFFSET[0] * factor, square_y + _FALLBACK_OFFSET[1] * factor],
        dtype=np.float32,
    )
    scale = np.float32(_FALLBACK_SCALE * factor)
    landmarks = (ARCFACE_TEMPLATE * scale + shift).astype(np.float32)
    side = float(ALIGNED_SIZE * scale)
    x1, y1 = float(shift[0]), float(shift[1])
    return Face(box=(x1, y1, x1 + side, y1 + side), score=0.0, landmarks=landmarks)


class FaceChooser:
    """Picks the labelled face of LFW images, retrying harder when the detector finds none.

    Args:
        pipeline: the pipeline under test; its detector is not modified.
        low_threshold: score threshold in [0, 1] of the retry.
    """

    def __init__(self, pipeline: FacePipeline, low_threshold: float = LOW_SCORE_THRESHOLD) -> None:
        self._pipeline = pipeline
        # A shallow copy shares the network weights and leaves the caller's detector as it was.
        self._low_detector = copy.copy(pipeline.detector)
        self._low_detector.score_threshold = low_threshold

    def choose(self, image_rgb: NDArray[np.uint8], faces: Sequence[Face]) -> ChosenFace:
        """The face to use, given the detections at the default threshold (possibly none).

        Args:
            image_rgb: (H, W, 3) uint8 RGB image.
            faces: what ``pipeline.detect(image_rgb)`` returned for it.
        """
        height, width = image_rgb.shape[:2]
        if faces:
            return ChosenFace(central_face(faces, width, height), FaceSource.DETECTED)
        retried = self._low_detector.detect(image_rgb)
        if retried:
            return ChosenFace(central_face(retried, width, height), FaceSource.LOW_THRESHOLD)
        return ChosenFace(centre_fallback_face(width, height), FaceSource.CENTRE_FALLBACK)
