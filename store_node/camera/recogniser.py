"""One camera's frames in, visits out: detect, track, gate by quality, recognise once per track.

Per frame the detector runs on the frame scaled to ``detect_side`` pixels on its longer side
(faces at a store entrance are 40-150 pixels wide in a 640x480 frame, still 20-75 at 320),
and every ``full_every``-th frame on the whole frame (up to 640 pixels), which finds the faces
too small or too poorly lit for the reduced frame;
the tracker links the faces to the people already in view; each face large enough is aligned
and its quality measured, and a track keeps the crops of its ``best_frames`` best frames, in
memory only. When a track ends (the person left, or was not seen for the tracker's
``lost_after``), those crops are embedded, fused into one decision (``store_node.camera.fusion``)
against the gallery as it is at that moment, and dropped; the track becomes one :class:`Visit`.
A stranger's visit carries no similarity, no identifier and no template.

Tracks seen in fewer than ``MIN_HITS`` frames are dropped as detector noise, and so are tracks
whose face never grew to the camera's ``smallest_face``: people far behind the door (or a face
in a poster) are not visitors, and their faces are too small to recognise anyway.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from store_node.camera.fusion import Fusion, mean_fusion
from store_node.camera.gallery_view import GalleryView
from store_node.camera.quality import measure
from store_node.camera.sources import Frame
from store_node.camera.tracker import Track, Tracker
from store_node.camera.visit import Visit
from store_node.face.alignment import align_face
from store_node.face.detector import Face

DETECT_SIDE = 320
"""Longer side, in pixels, of the frame the detector sees (a 640x480 frame is halved)."""
FULL_SIDE = 640
FULL_EVERY = 3
BEST_FRAMES = 3
MIN_HITS = 3
STAGES = ("decode", "detect", "track", "embed", "match")


@dataclass
class StageTimes:
    """Seconds spent per stage and frames processed, for health and the benchmark."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    frames: int = 0

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] += seconds

    def ms_per_frame(self) -> dict[str, float]:
        """Milliseconds per processed frame, per stage."""
        frames = max(1, self.frames)
        return {stage: 1000.0 * total / frames for stage, total in self.seconds.items()}


@dataclass
class _Held:
    """What a track keeps of its best frames: (quality score, order, crop), a min-heap."""

    best: list[tuple[float, int, NDArray[np.uint8]]] = field(default_factory=list)


class CameraRecogniser:
    """Turns one camera's frames into visits.

    Args:
        camera: the camera's name (on every visit).
        view: the store's gallery view (shared by all cameras).
        origin: the wall-clock time of media time 0 of the source.
        smallest_face: box width in frame pixels below which a face is not used.
        fusion: how a track's best frames become one decision.
        best_frames: how many frames of a track are embedded.
        detect_side: the detector's working size (longer side, pixels).
        full_every: every this many frames the detector sees the whole frame (at most
            ``FULL_SIDE`` pixels) instead: faces too small or too poorly lit to be found at
            ``detect_side`` still get a detection every few frames, which the tracker bridges.
            0 never.
        tracker: the tracker (a default ``Tracker`` when None).
    """

    def __init__(
        self,
        camera: str,
        view: GalleryView,
        origin: datetime,
        *,
        smallest_face: int = 40,
        fusion: Fusion = mean_fusion,
        best_frames: int = BEST_FRAMES,
        detect_side: int = DETECT_SIDE,
        full_every: int = FULL_EVERY,
        tracker: Tracker | None = None,
    ) -> None:
        self.camera = camera
        self.origin = origin
        self.smallest_face = smallest_face
        self.fusion = fusion
        self.best_frames = best_frames
        self.times = StageTimes()
        self._view = view
        self.detect_side = detect_side
        self.full_every = full_every
        self._detector = view.pipeline.detector.with_settings(
            max_side=max(detect_side, FULL_SIDE), retry_border=0.0
        )
        self._tracker = tracker if tracker is not None else Tracker()
        self._held: dict[int, _Held] = defaultdict(_Held)
        self._near: set[int] = set()
        self._frames = 0
        self._order = 0

    def process(self, frame: Frame) -> list[Visit]:
        """Look at one frame; the visits of the tracks that ended with it."""
        started = time.perf_counter()
        faces = self._detect(frame.pixels)
        detected = time.perf_counter()
        update = self._tracker.update([face.box for face in faces], frame.media_seconds)
        for track, index in update.matched:
            face = faces[index]
            if face.box[2] - face.box[0] < self.smallest_face:
                continue
            self._near.add(track.track_id)
            crop = align_face(frame.pixels, face.landmarks)
            quality = measure(face, crop)
            if quality.usable(self.smallest_face):
                self._keep(track.track_id, quality.score, crop)
        self.times.add("detect", detected - started)
        self.times.add("track", time.perf_counter() - detected)
        self.times.frames += 1
        return [visit for track in update.ended if (visit := self._close(track)) is not None]

    def _detect(self, pixels: NDArray[np.uint8]) -> list[Face]:
        """Faces in frame pixels, found in the frame reduced by a whole factor to at most
        ``detect_side`` (a box average: a third of the cost of a bilinear resize)."""
        height, width = pixels.shape[:2]
        side = self.detect_side
        self._frames += 1
        if self.full_every and self._frames % self.full_every == 1 % self.full_every:
            side = max(side, FULL_SIDE)
        factor = math.ceil(max(height, width) / side)
        if factor <= 1:
            return self._detector.detect(pixels)
        small = np.asarray(Image.fromarray(pixels).reduce(factor), dtype=np.uint8)
        x_scale, y_scale = width / small.shape[1], height / small.shape[0]
        return [face.rescaled(x_scale, y_scale) for face in self._detector.detect(small)]

    def finish(self) -> list[Visit]:
        """End every track (the source ended or the camera stops); their visits."""
        return [v for track in self._tracker.end_all() if (v := self._close(track)) is not None]

    def _keep(self, track_id: int, score: float, crop: NDArray[np.uint8]) -> None:
        held = self._held[track_id].best
        self._order += 1
        if len(held) < self.best_frames:
            heapq.heappush(held, (score, self._order, crop))
        elif score > held[0][0]:
            heapq.heapreplace(held, (score, self._order, crop))

    def _close(self, track: Track) -> Visit | None:
        held = self._held.pop(track.track_id, _Held()).best
        near = track.track_id in self._near
        self._near.discard(track.track_id)
        if track.hits < MIN_HITS or not near:
            return None
        started_at = self.origin + timedelta(seconds=track.first_seen)
        ended_at = self.origin + timedelta(seconds=track.last_seen)
        if not held:
            return Visit(self.camera, started_at, ended_at, None, None, None)
        crops = np.stack([crop for _, _, crop in held])
        held.clear()
        began = time.perf_counter()
        pipeline = self._view.pipeline
        embeddings = pipeline.embed(crops)
        embedded = time.perf_counter()
        version = pipeline.model_version
        decision = self.fusion(embeddings, lambda probes: self._view.search(probes, version))
        self.times.add("embed", embedded - began)
        self.times.add("match", time.perf_counter() - embedded)
        if decision.member_id is None:
            return Visit(self.camera, started_at, ended_at, None, None, None)
        return Visit(
            self.camera,
            started_at,
            ended_at,
            decision.member_id,
            round(decision.similarity, 4),
            len(crops),
        )
