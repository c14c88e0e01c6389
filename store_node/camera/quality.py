"""Which frames of a track are worth recognising: face size, sharpness and pose.

Measured from the face itself, as ISO/IEC 29794-5 face-image quality does and as NIST FRTE
1:N practice recommends for video (choose the best few frames of a track, not every frame):

- **size**: the box width in the camera's pixels. Below the camera's ``smallest_face`` the
  face is tracked but not used: the 112-pixel crop would be mostly interpolation.
- **sharpness**: the variance of the Laplacian of the grey aligned crop (0-255 units). Motion
  blur and defocus flatten it; a sharp 112x112 face scores in the hundreds.
- **pose**: a yaw proxy from the landmarks, the nose tip's horizontal offset from the eyes'
  midpoint divided by the eye distance: 0 for a frontal face, about +-0.5 in profile.

A frame passes the gate when it is large enough, not too blurred and not too far turned; the
frames that pass are ranked by ``score``, and the best few of a track are embedded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from store_node.face.detector import Face

MIN_SHARPNESS = 15.0
"""Laplacian variance below which a crop is too blurred to recognise."""
MAX_YAW = 0.35
"""Largest |yaw proxy| accepted: about 40 degrees of head turn."""
_SHARP_ENOUGH = 150.0
# Sharpness beyond this adds nothing to the rank (a noisy dark frame is "sharp" too).


@dataclass(frozen=True)
class FaceQuality:
    """How usable one face in one frame is."""

    width: float
    """Box width in pixels of the camera's frame."""
    sharpness: float
    """Variance of the Laplacian of the grey aligned crop."""
    yaw: float
    """Nose offset from the eyes' midpoint over the eye distance; 0 is frontal."""

    def usable(self, smallest_face: float) -> bool:
        """Large, sharp and frontal enough to recognise."""
        return (
            self.width >= smallest_face
            and self.sharpness >= MIN_SHARPNESS
            and abs(self.yaw) <= MAX_YAW
        )

    @property
    def score(self) -> float:
        """Rank among a track's usable frames, in [0, 1]: larger, sharper, more frontal."""
        size = min(1.0, self.width / 120.0)
        sharp = min(1.0, self.sharpness / _SHARP_ENOUGH)
        frontal = max(0.0, 1.0 - abs(self.yaw) / MAX_YAW)
        return size * sharp * (0.5 + 0.5 * frontal)


def measure(face: Face, crop: NDArray[np.uint8]) -> FaceQuality:
    """The quality of ``face`` (in frame pixels) from its landmarks and its aligned crop."""
    marks = face.landmarks
    eyes_mid = (marks[0] + marks[1]) / 2.0
    eye_distance = float(np.linalg.norm(marks[1] - marks[0]))
    yaw = float(marks[2][0] - eyes_mid[0]) / eye_distance if eye_distance > 1e-3 else 1.0
    return FaceQuality(width=face.box[2] - face.box[0], sharpness=laplacian_variance(crop), yaw=yaw)


def laplacian_variance(crop: NDArray[np.uint8]) -> float:
    """Variance of the 4-neighbour Laplacian of the crop's luminance (0-255 units)."""
    grey = crop.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    lap = grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4 * grey[1:-1, 1:-1]
    return float(lap.var())
