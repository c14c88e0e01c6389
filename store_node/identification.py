"""Identification 1:N: who, among the store's members, is in this photo, or "unknown"."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from store_node.face import FacePipeline, ImageError
from store_node.face.images import ImageSource, describe_source, read_image
from store_node.gallery import Gallery, Match


@dataclass(frozen=True)
class FaceDecision:
    """One face found in a photo and the gallery's answer for it.

    Attributes:
        box: (x1, y1, x2, y2) in pixels of the photo as stored, also when a large photo was
            scaled down to be searched.
        match: the best member, its cosine similarity in [-1, 1], the threshold, and
            ``member_id`` None when the similarity is below the threshold ("unknown").
    """

    box: tuple[float, float, float, float]
    match: Match


@dataclass(frozen=True)
class PhotoIdentification:
    """Every face of one photo, or why the photo could not be read (``error`` non-empty)."""

    source: str
    faces: list[FaceDecision]
    error: str = ""


def identify_photos(
    gallery: Gallery,
    pipeline: FacePipeline,
    photos: Sequence[ImageSource],
    threshold: float,
    *,
    all_faces: bool = True,
) -> list[PhotoIdentification]:
    """Identify the faces in each photo against the gallery at ``threshold``.

    A photo that cannot be read (missing, damaged, not an image, over the pixel limit of
    ``store_node.face.images``) is reported with ``error`` set; the others still run.
    """
    results: list[PhotoIdentification] = []
    for photo in photos:
        try:
            loaded = read_image(photo)
        except ImageError as err:
            results.append(PhotoIdentification(describe_source(photo), [], error=str(err)))
            continue
        image = loaded.pixels
        faces = pipeline.detect(image)
        if not all_faces:
            faces = faces[:1]
        if not faces:
            results.append(PhotoIdentification(describe_source(photo), []))
            continue
        embeddings = pipeline.embed(pipeline.align(image, faces))
        matches = gallery.identify(embeddings, pipeline.model_version, threshold)
        sx, sy = loaded.scale
        decisions = [
            FaceDecision(face.rescaled(sx, sy).box, match)
            for face, match in zip(faces, matches, strict=True)
        ]
        results.append(PhotoIdentification(describe_source(photo), decisions))
    return results
