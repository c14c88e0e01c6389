"""The store's cameras inside ``loyalnet store serve``: every camera read, recognised, logged.

Each camera runs two threads joined by a bounded queue (``QUEUE_FRAMES`` frames):

- a **reader** opens the source, samples it to the camera's fps and decodes; a live camera's
  oldest waiting frame is dropped (and counted) when the recogniser falls behind, a recording
  waits instead, so a slow camera never eats memory. A source that cannot be opened, or that
  disconnects, is retried with exponential back-off (tenacity) while the other cameras go on;
  a recording that ended waits for new material (a folder's new images, a replaced file);
- a **recogniser** (:class:`CameraRecogniser`) turns frames into visits, written to the
  store's :class:`VisitLog`.

A corrupt frame is skipped and counted. Health (:meth:`CameraService.health`) says per camera
whether it runs, how fast, when its last frame came, and why it is down. Frames, crops and
embeddings never leave memory; the log names cameras and counts, never a member.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from tenacity import RetryError, Retrying, retry_if_exception_type
from tenacity.wait import wait_random_exponential

from store_node.camera.fusion import FUSIONS
from store_node.camera.gallery_view import GalleryView, PipelineLoader
from store_node.camera.recogniser import (
    BEST_FRAMES,
    DETECT_SIDE,
    FULL_EVERY,
    CameraRecogniser,
    StageTimes,
)
from store_node.camera.sources import (
    CorruptFrame,
    FolderSource,
    Frame,
    FrameSource,
    SourceError,
    describe,
    open_source,
    sampled,
)
from store_node.camera.visit import Visit
from store_node.camera.visit_log import VisitLog
from store_node.config import CameraSettings, StorePaths
from store_node.face import FacePipeline
from store_node.face.weights import EmbedderBackend, WeightsError
from store_node.sync.health import VisitCounts

log = logging.getLogger("loyalnet.store.cameras")

QUEUE_FRAMES = 4
"""Frames waiting between a camera's reader and its recogniser."""


class CameraState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    DOWN = "down"
    """The source cannot be opened or disconnected; retried with back-off."""
    ENDED = "ended"
    """A recording was read to its end; waiting for new material."""
    STOPPED = "stopped"


@dataclass(frozen=True)
class ServiceSettings:
    """How the cameras work; defaults suit a 2-core store computer.

    Attributes:
        fusion: "mean" or "vote" (``store_node.camera.fusion``).
        detect_side: the detector's working size, longer side in pixels.
        full_every: every this many frames the detector sees the whole frame (0: never).
        best_frames: how many of a track's best frames decide its visit.
        retry_initial, retry_max: the back-off between tries of a source that is down.
        threads: CPU threads of each face-model call. One: the cameras' threads (and the
            reader beside each) already use the cores; on 2 cores one camera ran at 63 frames
            per second with one thread and 23 with two (``loyalnet bench stream``).
        backend: the runtime of the face networks: "onnxruntime" (detection 7.7 ms against
            12.5 ms for torch on a 320x240 frame) or "torch", which is also the fallback when
            the ONNX graphs cannot be made.
    """

    fusion: str = "mean"
    detect_side: int = DETECT_SIDE
    full_every: int = FULL_EVERY
    best_frames: int = BEST_FRAMES
    retry_initial: float = 1.0
    retry_max: float = 60.0
    threads: int | None = 1
    backend: EmbedderBackend = "onnxruntime"


@dataclass
class CameraHealth:
    """One camera as health reports it; no image, no person."""

    name: str
    source: str
    state: CameraState = CameraState.STARTING
    reason: str = ""
    fps: float = 0.0
    last_frame_at: datetime | None = None
    opened_at: datetime | None = None
    """Wall-clock time of the source's media time 0 (when it was last opened)."""
    frames: int = 0
    dropped: int = 0
    corrupt: int = 0
    member_visits: int = 0
    unknown_visits: int = 0
    stage_ms: dict[str, float] = field(default_factory=dict)


class _Stopped(Exception):
    pass


class _SourceDown(Exception):
    pass


_END = object()


class _Camera:
    """The reader and recogniser threads of one camera."""

    def __init__(
        self,
        spec: CameraSettings,
        view: GalleryView,
        visits: VisitLog,
        settings: ServiceSettings,
        stopping: threading.Event,
    ) -> None:
        self.spec = spec
        self.health = CameraHealth(spec.name, describe(spec.source))
        self._view = view
        self._visits = visits
        self._settings = settings
        self._stopping = stopping
        self._queue: queue.Queue[object] = queue.Queue(maxsize=QUEUE_FRAMES)
        self._lock = threading.Lock()
        self._recent: list[float] = []
        self.drained = threading.Event()
        """Set when the recogniser has finished the visits of a source that ended."""
        self.times = StageTimes()
        self.threads = [
            threading.Thread(target=self._read, name=f"camera-{spec.name}-reader", daemon=True),
            threading.Thread(
                target=self._recognise, name=f"camera-{spec.name}-recogniser", daemon=True
            ),
        ]

    # -- the reader ------------------------------------------------------------------------

    def _read(self) -> None:
        after = ""
        signature: tuple[int, int] | None = None
        try:
            while not self._stopping.is_set():
                source = self._open(after, signature)
                origin = datetime.now(UTC)
                with self._lock:
                    self.health.opened_at = origin
                self._set_state(CameraState.RUNNING, "")
                log.info("camera %s: reading %s", self.spec.name, self.health.source)
                try:
                    self._put(origin)
                    ended = self._pump(source)
                finally:
                    if isinstance(source, FolderSource):
                        after = source.last_name
                    source.close()
                self._put(_END)
                signature = _file_signature(self.spec.source)
                if ended and source.live:
                    self._set_state(CameraState.DOWN, "the stream closed; reconnecting")
                    log.warning("camera %s: the stream closed; reconnecting", self.spec.name)
                elif ended:
                    self._set_state(CameraState.ENDED, "the recording ended")
                    log.info("camera %s: the recording ended", self.spec.name)
        except _Stopped:
            pass
        except Exception as err:  # a bug must not pass silently: health and the log say it
            log.exception("camera %s: reader failed", self.spec.name)
            self._set_state(CameraState.DOWN, f"reader failed: {err}")
        finally:
            self._put_final()

    def _open(self, after: str, signature: tuple[int, int] | None) -> FrameSource:
        """The source, reopened with back-off until it opens (or has new material)."""

        def attempt() -> FrameSource:
            if self._stopping.is_set():
                raise _Stopped
            if signature is not None and _file_signature(self.spec.source) == signature:
                raise _SourceDown("the recording ended; waiting for a new one")
            try:
                source = open_source(self.spec.source, after)
            except SourceError as err:
                self._set_state(CameraState.DOWN, str(err))
                raise _SourceDown(str(err)) from err
            if isinstance(source, FolderSource) and source.waiting == 0:
                source.close()
                raise _SourceDown("no new images in the folder yet")
            return source

        retrying = Retrying(
            retry=retry_if_exception_type(_SourceDown),
            wait=wait_random_exponential(
                multiplier=self._settings.retry_initial, max=self._settings.retry_max
            ),
            stop=lambda _: self._stopping.is_set(),
            sleep=self._pause,
            reraise=False,
        )
        try:
            return retrying(attempt)
        except RetryError as err:
            raise _Stopped from err

    def _pause(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def _pump(self, source: FrameSource) -> bool:
        """Frames from ``source`` into the queue until it ends (True) or we stop."""
        frames = sampled(source, self.spec.fps, on_corrupt=self._skip_corrupt)
        while not self._stopping.is_set():
            started = time.perf_counter()
            frame = next(frames, None)
            if frame is None:
                return True
            self.times.add("decode", time.perf_counter() - started)
            if source.live:
                self._put_live(frame)
            else:
                self._put(frame)
        return False

    def _skip_corrupt(self, err: CorruptFrame) -> None:
        with self._lock:
            self.health.corrupt += 1
        log.warning("camera %s: skipped a corrupt frame (%s)", self.spec.name, err)

    def _put(self, item: object) -> None:
        while not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue
        raise _Stopped

    def _put_live(self, frame: Frame) -> None:
        """Queue a live frame, dropping the oldest waiting frame when the queue is full."""
        while True:
            try:
                self._queue.put_nowait(frame)
                return
            except queue.Full:
                try:
                    dropped = self._queue.get_nowait()
                except queue.Empty:
                    continue
                with self._lock:
                    self.health.dropped += 1
                if not isinstance(dropped, Frame):  # a marker must not be lost: it goes
                    self._queue.put(dropped)  # back, and this frame is the one dropped
                    return

    def _put_final(self) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put(_END, timeout=1.0)

    # -- the recogniser --------------------------------------------------------------------

    def _recognise(self) -> None:
        recogniser: CameraRecogniser | None = None
        try:
            while True:
                try:
                    item = self._queue.get(timeout=0.5)
                except queue.Empty:
                    if self._stopping.is_set() and not self.threads[0].is_alive():
                        break
                    continue
                if isinstance(item, datetime):
                    self.drained.clear()
                    recogniser = self._new_recogniser(item)
                elif item is _END:
                    if recogniser is not None:
                        self._record(recogniser.finish())
                    self.drained.set()
                    if self._stopping.is_set() or not self.threads[0].is_alive():
                        break
                elif isinstance(item, Frame) and recogniser is not None:
                    self._record(recogniser.process(item))
                    self._count_frame()
        except Exception as err:
            log.exception("camera %s: recogniser failed", self.spec.name)
            self._set_state(CameraState.DOWN, f"recogniser failed: {err}")
        finally:
            if recogniser is not None:
                try:
                    self._record(recogniser.finish())
                except Exception:
                    log.exception("camera %s: visits of the last tracks lost", self.spec.name)

    def _new_recogniser(self, origin: datetime) -> CameraRecogniser:
        recogniser = CameraRecogniser(
            self.spec.name,
            self._view,
            origin,
            smallest_face=self.spec.smallest_face,
            fusion=FUSIONS[self._settings.fusion],
            detect_side=self._settings.detect_side,
            full_every=self._settings.full_every,
            best_frames=self._settings.best_frames,
        )
        recogniser.times = self.times
        return recogniser

    def _record(self, visits: list[Visit]) -> None:
        for visit in visits:
            self._visits.record(visit)
            with self._lock:
                if visit.member_id is None:
                    self.health.unknown_visits += 1
                else:
                    self.health.member_visits += 1

    def _count_frame(self) -> None:
        now = time.monotonic()
        with self._lock:
            self.health.frames += 1
            self.health.last_frame_at = datetime.now(UTC)
            self._recent.append(now)
            while self._recent and now - self._recent[0] > 5.0:
                self._recent.pop(0)
            span = self._recent[-1] - self._recent[0] if len(self._recent) > 1 else 0.0
            self.health.fps = (len(self._recent) - 1) / span if span > 0 else 0.0

    def _set_state(self, state: CameraState, reason: str) -> None:
        with self._lock:
            self.health.state = state
            self.health.reason = reason

    def snapshot(self) -> CameraHealth:
        with self._lock:
            copy = CameraHealth(**vars(self.health))
        copy.stage_ms = {k: round(v, 2) for k, v in self.times.ms_per_frame().items()}
        stopped = not any(thread.is_alive() for thread in self.threads)
        if stopped and copy.state is not CameraState.DOWN:
            copy.state = CameraState.STOPPED
        return copy


def pipeline_loader(paths: StorePaths, settings: ServiceSettings) -> PipelineLoader:
    """Loads the store's recognition pipeline on ``settings.backend``, falling back to torch
    (with a warning) when ONNX Runtime cannot run it."""

    def load() -> FacePipeline:
        from store_node.retemplate import recognition_pipeline

        try:
            return recognition_pipeline(
                paths.root, threads=settings.threads, backend=settings.backend
            )
        except WeightsError as err:
            if settings.backend == "torch":
                raise
            log.warning("face models on %s failed (%s); using torch", settings.backend, err)
            return recognition_pipeline(paths.root, threads=settings.threads, backend="torch")

    return load


def _file_signature(source: str) -> tuple[int, int] | None:
    """(size, mtime) of a video file source, None for any other kind."""
    try:
        found = os.stat(source)
    except OSError:
        return None
    return (found.st_size, found.st_mtime_ns) if stat.S_ISREG(found.st_mode) else None


class CameraService:
    """Every camera of the store; a ``StoreService`` of ``loyalnet store serve`` and the
    sync agent's ``VisitSource``.

    Args:
        paths: the store folder.
        cameras: the cameras to run (``store.toml`` plus ``--camera``).
        target_fpir: the store's target false-positive identification rate.
        view: the gallery view (built from the store when None).
    """

    name = "cameras"

    def __init__(
        self,
        paths: StorePaths,
        cameras: Sequence[CameraSettings],
        target_fpir: float,
        settings: ServiceSettings | None = None,
        *,
        view: GalleryView | None = None,
    ) -> None:
        self._paths = paths
        self._specs = list(cameras)
        self._settings = settings if settings is not None else ServiceSettings()
        if self._settings.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}")
        self._target_fpir = target_fpir
        self._view = view
        self._owns_view = view is None
        self._visits: VisitLog | None = None
        self._stopping = threading.Event()
        self._cameras: list[_Camera] = []

    def start(self) -> None:
        """Load the face models and the gallery, then start every camera."""
        self._visits = VisitLog.open(self._paths.root)
        self._visits.prune()
        if self._view is None:
            self._view = GalleryView(
                self._paths, self._target_fpir, pipeline_loader(self._paths, self._settings)
            )
        self._view.refresh()
        log.info(
            "cameras: %d template(s) searchable at threshold %.3f",
            self._view.templates,
            self._view.threshold,
        )
        for spec in self._specs:
            camera = _Camera(spec, self._view, self._visits, self._settings, self._stopping)
            self._cameras.append(camera)
            for thread in camera.threads:
                thread.start()

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop every camera (their open tracks become visits) and close the log."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        ended = True
        for camera in self._cameras:
            for thread in camera.threads:
                thread.join(max(0.0, deadline - time.monotonic()))
                ended = ended and not thread.is_alive()
        if ended:
            if self._visits is not None:
                self._visits.close()
                self._visits = None
            if self._view is not None and self._owns_view:
                self._view.close()
        return ended

    def running(self) -> bool:
        """True until stopped: a camera that is down or ended is retried, not fatal."""
        return not self._stopping.is_set()

    @property
    def threshold(self) -> float:
        """The decision threshold the cameras search at now (cosine similarity)."""
        if self._view is None:
            raise RuntimeError("the camera service has not started")
        return self._view.threshold

    @property
    def templates(self) -> int:
        """Templates the cameras search."""
        return 0 if self._view is None else self._view.templates

    def health(self) -> list[CameraHealth]:
        """Every camera's state, rate and counts, in the order configured."""
        return [camera.snapshot() for camera in self._cameras]

    def visits_today(self) -> VisitCounts | None:
        """Today's (UTC) visits of all cameras, for the heartbeat; None before the start."""
        if self._visits is None:
            return None
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        members, unknown = self._visits.totals_since(today)
        return VisitCounts(member_visits=members, unknown_visits=unknown)

    def recordings_done(self) -> bool:
        """Every camera is a recording that was read to its end and fully recognised."""
        return bool(self._cameras) and all(
            camera.snapshot().state is CameraState.ENDED and camera.drained.is_set()
            for camera in self._cameras
        )
