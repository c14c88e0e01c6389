"""A visit: one person seen by one camera, the record the cameras hand to the store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Visit:
    """One person seen by one camera, from when they appeared to when they left.

    ``member_id``, ``similarity`` and ``frames_used`` are None for an unknown visit: it holds
    the camera and the times only.
    """

    camera: str
    started_at: datetime
    ended_at: datetime
    member_id: str | None
    similarity: float | None
    frames_used: int | None
