"""A store entrance on video, made from real face photos: who walks in, when, under what light.

Each visit is one photo (a person's probe, never one of their enrolment photos) shown as a
``SPRITE_SIDE``-pixel square that enters from one side of a 640x480 frame in one of three
lanes, walks, pauses, and leaves on the other side. Up to three people are in view at once
(one per lane). Some visits are under poor light (``store_node.cameras`` low light, with fresh
sensor noise every frame). The background is a fixed texture, as a fixed camera sees it.

The script (:class:`VisitScript`) is the ground truth the benchmark and the tests score the
store's visit events against. Everything is drawn from one seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from store_node.cameras import CameraCondition, through_camera
from store_node.face.images import load_image

FRAME_WIDTH = 640
FRAME_HEIGHT = 480
SPRITE_SIDE = 150
LANES = 3
FPS = 25.0
TIGHT_CROP_SIDE = 200
"""Photos whose longer side is below this are tight face crops (ORL 92x112, Yale 168x192)."""
CROP_FACE_HEIGHT = 96
STAGGER_SECONDS = 1.0
"""Least time between two people entering (in any lanes): a store's door lets people in one
after the other, and the score, which has only times, can tell people in view apart."""
WALK_SPEED = 260.0
"""Pixels per second a person crosses the frame at."""


@dataclass(frozen=True)
class ScriptedVisit:
    """One person's pass through the frame (times in seconds of the video)."""

    photo: Path
    member_id: str | None
    """The member this person is, or None for a stranger."""
    lane: int
    enters: float
    pause_after: float
    """Pixels walked before the pause."""
    pause_seconds: float
    from_left: bool
    poor_light: bool

    @property
    def walk_seconds(self) -> float:
        return (FRAME_WIDTH + SPRITE_SIDE) / WALK_SPEED

    @property
    def leaves(self) -> float:
        return self.enters + self.walk_seconds + self.pause_seconds

    def left_edge(self, seconds: float) -> float | None:
        """The sprite's left edge in pixels at ``seconds``, None when it is out of the frame."""
        t = seconds - self.enters
        if t < 0 or seconds > self.leaves:
            return None
        pause_starts = self.pause_after / WALK_SPEED
        if t > pause_starts:
            t = max(pause_starts, t - self.pause_seconds)
        travelled = t * WALK_SPEED
        return travelled - SPRITE_SIDE if self.from_left else FRAME_WIDTH - travelled


@dataclass(frozen=True)
class VisitScript:
    """The visits of a video, in order of entry, and its length in seconds."""

    visits: tuple[ScriptedVisit, ...]
    seconds: float


def make_script(
    members: Sequence[tuple[str, Path]],
    strangers: Sequence[Path],
    *,
    seed: int,
    poor_light_share: float = 0.2,
    gap_seconds: tuple[float, float] = (0.5, 2.5),
) -> VisitScript:
    """Every member probe and stranger photo as one visit, shuffled over the three lanes."""
    rng = np.random.default_rng(seed)
    people: list[tuple[Path, str | None]] = [(p, m) for m, p in members]
    people += [(p, None) for p in strangers]
    order = rng.permutation(len(people))
    lane_free = [0.0] * LANES
    visits = []
    last_entry = -STAGGER_SECONDS
    for index in order:
        photo, member = people[int(index)]
        lane = int(np.argmin(lane_free))
        enters = lane_free[lane] + float(rng.uniform(*gap_seconds))
        enters = max(enters, last_entry + STAGGER_SECONDS)
        last_entry = enters
        visit = ScriptedVisit(
            photo=photo,
            member_id=member,
            lane=lane,
            enters=round(enters, 2),
            pause_after=float(rng.uniform(2 * SPRITE_SIDE, FRAME_WIDTH)),
            pause_seconds=round(float(rng.uniform(0.5, 2.0)), 2),
            from_left=bool(rng.random() < 0.5),
            poor_light=bool(rng.random() < poor_light_share),
        )
        lane_free[lane] = visit.leaves
        visits.append(visit)
    visits.sort(key=lambda v: v.enters)
    return VisitScript(tuple(visits), max(lane_free) + 1.0)


def background(seed: int) -> NDArray[np.uint8]:
    """A fixed, faceless texture: a vertical gradient with coarse blotches."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(150, 70, FRAME_HEIGHT, dtype=np.float32)[:, None, None]
    blotches = rng.normal(0, 18, size=(FRAME_HEIGHT // 40, FRAME_WIDTH // 40, 3))
    coarse = np.asarray(
        Image.fromarray(np.clip(blotches + 128, 0, 255).astype(np.uint8)).resize(
            (FRAME_WIDTH, FRAME_HEIGHT), Image.Resampling.BILINEAR
        ),
        dtype=np.float32,
    )
    frame = rows + (coarse - 128.0) + np.array([8.0, 0.0, -6.0], dtype=np.float32)
    out: NDArray[np.uint8] = np.clip(frame, 0, 255).astype(np.uint8)
    return out


def write_video(script: VisitScript, path: Path, *, seed: int, fps: float = FPS) -> int:
    """Render the script to an MP4 file (MPEG-4 Part 2) at ``fps``; the number of frames.

    Raises:
        OSError: the file cannot be written.
    """
    import cv2

    rng = np.random.default_rng(seed + 1)
    base = background(seed)
    sprites = {visit.photo: sprite(visit.photo) for visit in script.visits}
    lane_top = [round(i * (FRAME_HEIGHT - SPRITE_SIDE) / max(1, LANES - 1)) for i in range(LANES)]
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (FRAME_WIDTH, FRAME_HEIGHT)
    )
    if not writer.isOpened():
        raise OSError(f"cannot write the video {path}")
    count = int(script.seconds * fps)
    try:
        for number in range(count):
            seconds = number / fps
            frame = base.copy()
            for visit in script.visits:
                x = visit.left_edge(seconds)
                if x is None:
                    continue
                person = sprites[visit.photo]
                if visit.poor_light:
                    person = through_camera(person, CameraCondition.LOW_LIGHT, rng)
                _paste(frame, person, round(x), lane_top[visit.lane])
            writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    finally:
        writer.release()
    return count


def sprite(photo: Path) -> NDArray[np.uint8]:
    """The person as a ``SPRITE_SIDE`` square: a photo with context (LFW) resized; a tight
    face crop (ORL, Yale: the face fills the image) made ``CROP_FACE_HEIGHT`` pixels tall on
    a grey backdrop, as a head seen from a few metres."""
    image = Image.fromarray(load_image(photo))
    if max(image.size) >= TIGHT_CROP_SIDE:
        square = image.resize((SPRITE_SIDE, SPRITE_SIDE), Image.Resampling.BILINEAR)
        return np.asarray(square, dtype=np.uint8)
    width = round(image.width * CROP_FACE_HEIGHT / image.height)
    face = np.asarray(image.resize((width, CROP_FACE_HEIGHT), Image.Resampling.BILINEAR))
    canvas = np.full((SPRITE_SIDE, SPRITE_SIDE, 3), 118, dtype=np.uint8)
    top, left = (SPRITE_SIDE - CROP_FACE_HEIGHT) // 3, (SPRITE_SIDE - width) // 2
    canvas[top : top + CROP_FACE_HEIGHT, left : left + width] = face
    return canvas


def _paste(frame: NDArray[np.uint8], sprite: NDArray[np.uint8], x: int, y: int) -> None:
    left, right = max(0, x), min(FRAME_WIDTH, x + SPRITE_SIDE)
    if right <= left:
        return
    frame[y : y + SPRITE_SIDE, left:right] = sprite[:, left - x : right - x]
