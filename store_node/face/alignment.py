"""Similarity alignment of a face onto the 112x112 ArcFace landmark template."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from PIL import Image

from loyalnet.errors import LoyalnetError

ALIGNED_SIZE = 112

ARCFACE_TEMPLATE: NDArray[np.float32] = np.array(
    [
        [38.2946, 51.6963],  # left eye (image-left)
        [73.5318, 51.5014],  # right eye
        [56.0252, 71.7366],  # nose tip
        [41.5493, 92.3655],  # left mouth corner
        [70.7299, 92.2041],  # right mouth corner
    ],
    dtype=np.float32,
)
"""Where the 5 landmarks land in a 112x112 crop, (5, 2) as (x, y) pixels."""
ARCFACE_TEMPLATE.setflags(write=False)


class AlignmentError(LoyalnetError):
    """Landmarks that cannot define a face alignment."""


def estimate_similarity(src: ArrayLike, dst: ArrayLike) -> NDArray[np.float64]:
    """Least-squares similarity transform (rotation, uniform scale, translation) from src to dst.

    Umeyama's closed form: minimises sum ||s R src_i + t - dst_i||^2 with R a proper rotation.

    Args:
        src: (K, 2) points, K >= 2, e.g. detected landmarks in image pixels.
        dst: (K, 2) matching points, e.g. ``ARCFACE_TEMPLATE``.

    Returns:
        (2, 3) float64 matrix M with dst ~= M @ [x, y, 1].

    Raises:
        AlignmentError: mismatched shapes, fewer than 2 points, non-finite values, or all src
            points coincide (no scale can be estimated).
    """
    src_pts = np.asarray(src, dtype=np.float64)
    dst_pts = np.asarray(dst, dtype=np.float64)
    if src_pts.ndim != 2 or src_pts.shape[1] != 2 or src_pts.shape != dst_pts.shape:
        raise AlignmentError(
            f"landmark shapes {src_pts.shape} and {dst_pts.shape} do not match: pass two "
            "(K, 2) arrays of corresponding points."
        )
    if src_pts.shape[0] < 2 or not (np.isfinite(src_pts).all() and np.isfinite(dst_pts).all()):
        raise AlignmentError("landmarks must be at least 2 finite points: check the detection.")
    src_mean = src_pts.mean(axis=0)
    dst_mean = dst_pts.mean(axis=0)
    src_c = src_pts - src_mean
    dst_c = dst_pts - dst_mean
    src_var = float((src_c**2).sum() / len(src_pts))
    if src_var <= 1e-12:
        raise AlignmentError("all landmarks lie on one point: the face is degenerate.")
    cov = dst_c.T @ src_c / len(src_pts)
    u, sing, vt = np.linalg.svd(cov)
    # Flip the weakest axis if needed so R is a rotation, never a reflection.
    signs = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        signs[-1] = -1.0
    rotation = u @ np.diag(signs) @ vt
    scale = float((sing * signs).sum() / src_var)
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def align_face(
    image_rgb: NDArray[np.uint8], landmarks: ArrayLike, size: int = ALIGNED_SIZE
) -> NDArray[np.uint8]:
    """Warp the face with these landmarks onto the ArcFace template.

    Args:
        image_rgb: (H, W, 3) uint8 RGB image.
        landmarks: (5, 2) pixel coordinates (x, y), in ``ARCFACE_TEMPLATE`` order, with the
            centre of pixel (i, j) at (j, i) as OpenCV-style detectors report them.
        size: output side in pixels; the template is scaled by size / 112.

    Returns:
        (size, size, 3) uint8 RGB crop; areas outside the image are black. Bilinear sampling.
    """
    template = ARCFACE_TEMPLATE.astype(np.float64) * (size / ALIGNED_SIZE)
    forward = estimate_similarity(landmarks, template)
    # Pillow wants the map from output to input pixels, so invert the 2x3 affine.
    linear_inv = np.linalg.inv(forward[:, :2])
    offset_inv = -linear_inv @ forward[:, 2]
    # Pillow samples at pixel centres (x + 0.5); shift so integer coordinates are the centres,
    # which is the convention of the landmarks and the template.
    offset_inv = offset_inv + 0.5 - linear_inv.sum(axis=1) * 0.5
    coeffs = (
        float(linear_inv[0, 0]),
        float(linear_inv[0, 1]),
        float(offset_inv[0]),
        float(linear_inv[1, 0]),
        float(linear_inv[1, 1]),
        float(offset_inv[1]),
    )
    warped = Image.fromarray(image_rgb, mode="RGB").transform(
        (size, size),
        Image.Transform.AFFINE,
        coeffs,
        resample=Image.Resampling.BILINEAR,
    )
    return np.asarray(warped, dtype=np.uint8).copy()
