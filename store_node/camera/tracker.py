"""Following faces from frame to frame, so that one person walking past is one visit.

A greedy intersection-over-union (IoU) tracker with a constant-velocity prediction, in the
spirit of SORT (Bewley et al., "Simple Online and Realtime Tracking", ICIP 2016) without the
Kalman filter: each track predicts where its box will be at the new frame's time, detections
are matched to the prediction (or to the last box, for someone who stopped) by descending
IoU, unmatched detections start tracks, and a track not seen for ``lost_after`` seconds ends.
At a store entrance people walk at 1-2 m/s and faces are 40-150 pixels wide; at 10 frames per
second a box moves a fraction of its width between frames, which IoU matching follows without
appearance features.

Only boxes and times live here; what a track saw of the face is the recogniser's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Box = tuple[float, float, float, float]
"""x1, y1, x2, y2 in pixels."""


@dataclass
class Track:
    """One person followed across frames."""

    track_id: int
    box: Box
    first_seen: float
    last_seen: float
    """Media seconds of the first and the latest frame the face was detected in."""
    hits: int = 1
    """Frames the face was detected in."""
    velocity: tuple[float, float] = (0.0, 0.0)
    """Box centre motion in pixels per second, smoothed over frames."""

    def predicted(self, seconds: float) -> Box:
        """Where the box should be at media time ``seconds``."""
        dt = max(0.0, seconds - self.last_seen)
        dx, dy = self.velocity[0] * dt, self.velocity[1] * dt
        x1, y1, x2, y2 = self.box
        return (x1 + dx, y1 + dy, x2 + dx, y2 + dy)


@dataclass
class TrackUpdate:
    """What one frame did to the tracks."""

    matched: list[tuple[Track, int]] = field(default_factory=list)
    """(track, index of its detection in this frame), new tracks included."""
    ended: list[Track] = field(default_factory=list)
    """Tracks not seen for ``lost_after`` seconds, oldest first."""


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes, in [0, 1]."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class Tracker:
    """Tracks of one camera.

    Args:
        min_iou: a detection continues a track when its box overlaps the track's predicted
            box by at least this IoU.
        lost_after: seconds a track may go unseen (a missed detection, a face turned away)
            before it ends.
        velocity_smoothing: weight of the newest motion in the velocity estimate, in (0, 1].
    """

    def __init__(
        self, *, min_iou: float = 0.2, lost_after: float = 0.8, velocity_smoothing: float = 0.5
    ) -> None:
        self.min_iou = min_iou
        self.lost_after = lost_after
        self.velocity_smoothing = velocity_smoothing
        self._tracks: list[Track] = []
        self._next_id = 1

    def update(self, boxes: list[Box], seconds: float) -> TrackUpdate:
        """Match the boxes detected at media time ``seconds`` to the tracks."""
        update = TrackUpdate()
        pairs = []
        for t_index, track in enumerate(self._tracks):
            guess = track.predicted(seconds)
            for d_index, box in enumerate(boxes):
                # The last box too: a person who stops walking (to pause at the door) is
                # where they were, not where their speed would have taken them.
                overlap = max(iou(guess, box), iou(track.box, box))
                if overlap >= self.min_iou:
                    pairs.append((overlap, t_index, d_index))
        pairs.sort(reverse=True)
        used_tracks: set[int] = set()
        used_boxes: set[int] = set()
        for _, t_index, d_index in pairs:
            if t_index in used_tracks or d_index in used_boxes:
                continue
            used_tracks.add(t_index)
            used_boxes.add(d_index)
            track = self._tracks[t_index]
            self._follow(track, boxes[d_index], seconds)
            update.matched.append((track, d_index))
        for d_index, box in enumerate(boxes):
            if d_index not in used_boxes:
                track = Track(self._next_id, box, seconds, seconds)
                self._next_id += 1
                self._tracks.append(track)
                update.matched.append((track, d_index))
        still = []
        for track in self._tracks:
            if seconds - track.last_seen > self.lost_after:
                update.ended.append(track)
            else:
                still.append(track)
        self._tracks = still
        return update

    def end_all(self) -> list[Track]:
        """End every track (the source ended or the service stops), oldest first."""
        ended, self._tracks = self._tracks, []
        return ended

    def _follow(self, track: Track, box: Box, seconds: float) -> None:
        dt = seconds - track.last_seen
        if dt > 0:
            old = np.array(track.box).reshape(2, 2).mean(axis=0)
            new = np.array(box).reshape(2, 2).mean(axis=0)
            motion = (new - old) / dt
            w = self.velocity_smoothing if track.hits > 1 else 1.0
            track.velocity = (
                float(w * motion[0] + (1 - w) * track.velocity[0]),
                float(w * motion[1] + (1 - w) * track.velocity[1]),
            )
        track.box = box
        track.last_seen = seconds
        track.hits += 1
