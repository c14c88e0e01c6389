"""``loyalnet bench stream``: the camera service on a scripted entrance video, scored.

A temporary store enrols LFW people (three photos each); a video (``stream_scene``) shows
each member once more, on a photo not enrolled, and strangers who were never enrolled, some
under poor light, up to three at once. The store's real camera path (``CameraService``:
decode, detect, track, quality, embed, fuse, match, log) reads it as fast as it can, and the
visit events are scored against the script:

- a scripted visit is *found* when a logged visit of the same camera overlaps it in time by
  at least half of the shorter of the two (each logged visit counts for one scripted visit);
- a member visit is *correct* when its logged visit names that member;
- a stranger is *accepted* when their logged visit names any member.

The result is one JSON object (see :func:`run_stream_benchmark`).
"""

from __future__ import annotations

import resource
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from store_node.bench.stream_scene import VisitScript, make_script, write_video
from store_node.camera.recogniser import STAGES
from store_node.camera.service import CameraService, ServiceSettings
from store_node.camera.visit_log import VISITS_NAME, VisitLog
from store_node.config import CameraSettings, StoreConfig, StorePaths, write_config
from store_node.datasets.lfw import lfw_people
from store_node.enrolment import EnrolmentRequest, enrol_member
from store_node.face import FacePipeline
from store_node.gallery import Gallery, Purpose

ENROL_PHOTOS = 3
CAMERA = "entrance"


@dataclass(frozen=True)
class _Logged:
    start: float
    end: float
    member_id: str | None


def run_stream_benchmark(
    home: Path | None = None,
    *,
    members: int = 24,
    strangers: int = 24,
    seed: int = 0,
    fusions: Sequence[str] = ("mean",),
    threads: int | None = 1,
    fps: float = 25.0,
    on_step: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Build the store and the video, run the camera service, score it.

    Args:
        home: the shared data folder (None finds it).
        members, strangers: people in the video (each visits once).
        fusions: the fusions to run (each a full pass); the first gives the top-level fields.
        threads: CPU threads of each face-model call, as the camera service's default (one:
            the reader and recogniser threads already share the cores).
        fps: the camera's target frame rate (the video is 25 fps).
        on_step: told what the benchmark is doing (for a progress line).

    Returns:
        ``fps``, ``ms_per_stage`` (decode, detect, track, embed, match: milliseconds per
        frame), ``visits_found``, ``visits_total``, ``visits_extra``, ``members_correct``,
        ``members_total``, ``strangers_accepted``, ``strangers_total``, ``frames``,
        ``templates``, ``threshold``, ``peak_rss_mb``, ``rss_mb_quarter`` and ``rss_mb_end``
        (resident memory a quarter into the run and at its end), ``fusions`` (per fusion:
        members correct, strangers accepted), and the settings.
    """
    step = on_step if on_step is not None else (lambda _text: None)
    with tempfile.TemporaryDirectory(prefix="loyalnet-bench-stream-") as folder:
        root = Path(folder)
        paths = StorePaths(root / "store")
        paths.root.mkdir()
        config = StoreConfig(store_id="bench-stream")
        write_config(paths, config)
        step("loading the face models")
        pipeline = FacePipeline.load(home, threads=threads)
        step(f"enrolling {members} members")
        chosen, unknown = draw_people(home, members, strangers, seed)
        with Gallery.create(paths.database, paths.key) as gallery:
            for member_id, photos in chosen:
                request = EnrolmentRequest.under(
                    config, member_id, frozenset({Purpose.RECOGNITION})
                )
                enrol_member(gallery, pipeline, request, photos[:ENROL_PHOTOS])
        probes = [(member_id, photos[ENROL_PHOTOS]) for member_id, photos in chosen]
        script = make_script(probes, unknown, seed=seed)
        video = root / "entrance.mp4"
        step(f"rendering {script.seconds:.0f} s of video")
        frames_written = write_video(script, video, seed=seed)
        runs = {}
        for fusion in fusions:
            step(f"running the camera service ({fusion} fusion)")
            (paths.root / VISITS_NAME).unlink(missing_ok=True)
            runs[fusion] = _run(paths, config, video, fusion, threads, fps, script)
    first = runs[fusions[0]]
    return {
        **first,
        "fusions": {
            name: {k: run[k] for k in ("members_correct", "strangers_accepted", "visits_found")}
            for name, run in runs.items()
        },
        "video_seconds": round(script.seconds, 1),
        "video_frames": frames_written,
        "camera_fps": fps,
        "members": members,
        "strangers": strangers,
        "seed": seed,
        "threads": threads,
    }


def draw_people(
    home: Path | None, members: int, strangers: int, seed: int
) -> tuple[list[tuple[str, list[Path]]], list[Path]]:
    """Members (LFW people with 4+ photos: member id, photos) and strangers (a photo each of
    people with one photo), drawn by ``seed``; enrol a member's first ``ENROL_PHOTOS``."""
    rng = np.random.default_rng(seed)
    everyone = lfw_people(home)
    many = sorted(name for name, photos in everyone.items() if len(photos) > ENROL_PHOTOS)
    single = sorted(name for name, photos in everyone.items() if len(photos) == 1)
    picked = rng.choice(len(many), size=members, replace=False)
    chosen = [(f"M{i + 1:05d}", everyone[many[int(j)]]) for i, j in enumerate(picked)]
    others = rng.choice(len(single), size=strangers, replace=False)
    return chosen, [everyone[single[int(j)]][0] for j in others]


def _run(
    paths: StorePaths,
    config: StoreConfig,
    video: Path,
    fusion: str,
    threads: int | None,
    fps: float,
    script: VisitScript,
) -> dict[str, Any]:
    camera = CameraSettings(CAMERA, str(video), fps=fps, smallest_face=40)
    service = CameraService(
        paths, [camera], config.target_fpir, ServiceSettings(fusion=fusion, threads=threads)
    )
    service.start()
    began = time.perf_counter()
    samples: list[float] = []
    done = threading.Event()

    def sample_memory() -> None:
        while not done.wait(0.25):
            samples.append(_rss_mb())

    sampler = threading.Thread(target=sample_memory, daemon=True)
    sampler.start()
    try:
        while not service.recordings_done():
            time.sleep(0.05)
        elapsed = time.perf_counter() - began
        health = service.health()[0]
        threshold = service.threshold
        templates = service.templates
    finally:
        done.set()
        service.stop()
    sampler.join()
    assert health.opened_at is not None
    with VisitLog.open(paths.root, create=False) as log:
        events = log.events_after(0, limit=100_000)
    logged = [
        _Logged(
            (e.visit.started_at - health.opened_at).total_seconds(),
            (e.visit.ended_at - health.opened_at).total_seconds(),
            e.visit.member_id,
        )
        for e in events
    ]
    scored = _score(script, logged)
    return {
        "fps": round(health.frames / elapsed, 2),
        "ms_per_stage": {stage: round(health.stage_ms.get(stage, 0.0), 2) for stage in STAGES},
        **scored,
        "frames": health.frames,
        "dropped_frames": health.dropped,
        "corrupt_frames": health.corrupt,
        "templates": templates,
        "threshold": round(threshold, 4),
        "seconds": round(elapsed, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_mb_quarter": round(samples[len(samples) // 4], 1) if samples else None,
        "rss_mb_end": round(samples[-1], 1) if samples else None,
    }


def _score(script: VisitScript, logged: list[_Logged]) -> dict[str, int]:
    """Match logged visits to scripted ones by time overlap; count what the issue asks."""
    used: set[int] = set()
    found = correct = accepted = 0
    for visit in script.visits:
        best, best_overlap = None, 0.0
        for index, event in enumerate(logged):
            if index in used:
                continue
            overlap = min(visit.leaves, event.end) - max(visit.enters, event.start)
            shorter = min(visit.leaves - visit.enters, event.end - event.start)
            if shorter > 0 and overlap >= 0.5 * shorter and overlap > best_overlap:
                best, best_overlap = index, overlap
        if best is None:
            continue
        used.add(best)
        found += 1
        named = logged[best].member_id
        if visit.member_id is not None and named == visit.member_id:
            correct += 1
        if visit.member_id is None and named is not None:
            accepted += 1
    return {
        "visits_found": found,
        "visits_total": len(script.visits),
        "visits_extra": len(logged) - len(used),
        "members_correct": correct,
        "members_total": sum(v.member_id is not None for v in script.visits),
        "strangers_accepted": accepted,
        "strangers_total": sum(v.member_id is None for v in script.visits),
    }


def _rss_mb() -> float:
    """Resident memory of this process now, in MB (Linux)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20
