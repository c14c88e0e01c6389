"""The camera service's parts on their own: sources, tracker, quality, fusion, visit log, and
the [[cameras]] tables of store.toml. Real files, real SQLite, real face crops."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loyalnet.errors import LoyalnetError
from store_node.camera.fusion import mean_fusion, vote_fusion
from store_node.camera.quality import MAX_YAW, laplacian_variance, measure
from store_node.camera.sources import CorruptFrame, SourceError, describe, open_source, sampled
from store_node.camera.tracker import Tracker, iou
from store_node.camera.visit import Visit
from store_node.camera.visit_log import EVENT_RETENTION_DAYS, VisitLog, forget_member_visits
from store_node.cameras import CameraCondition, through_camera
from store_node.config import CameraSettings, StoreConfig, StorePaths, read_config, write_config
from store_node.face import FacePipeline, load_image
from store_node.gallery.search import TemplateIndex


@pytest.fixture(scope="module")
def pipeline() -> FacePipeline:
    return FacePipeline.load(threads=1)


# -- sources ----------------------------------------------------------------------------------


def test_a_folder_source_reads_in_name_order_skips_corrupt_images_and_resumes(
    tmp_path: Path,
) -> None:
    for number in range(6):
        Image.fromarray(np.full((48, 64, 3), number * 40, np.uint8)).save(
            tmp_path / f"{number}.png"
        )
    (tmp_path / "3.png").write_bytes(b"not a png")
    (tmp_path / "notes.txt").write_text("not an image")
    source = open_source(str(tmp_path))
    levels, corrupt = [], 0
    while True:
        try:
            frame = source.read()
        except CorruptFrame:
            corrupt += 1
            continue
        if frame is None:
            break
        levels.append(int(frame.pixels[0, 0, 0]))
        assert frame.pixels.shape == (48, 64, 3)
    assert levels == [0, 40, 80, 160, 200] and corrupt == 1
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(tmp_path / "6.png")
    resumed = open_source(str(tmp_path), after="5.png")
    assert resumed.read() is not None and resumed.read() is None


def test_sampling_keeps_the_camera_rate_from_a_faster_source(tmp_path: Path) -> None:
    for number in range(50):  # two seconds of a 25 fps folder
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / f"{number:03d}.png")
    kept = [frame.media_seconds for frame in sampled(open_source(str(tmp_path)), 10.0)]
    assert len(kept) == 20
    gaps = np.diff(kept)
    assert gaps.min() >= 0.08 - 1e-9 and gaps.max() <= 0.12 + 1e-9


def test_sources_that_do_not_exist_are_refused_and_urls_lose_their_credentials(
    tmp_path: Path,
) -> None:
    with pytest.raises(SourceError, match="neither a camera index"):
        open_source(str(tmp_path / "missing.mp4"))
    (tmp_path / "fake.mp4").write_bytes(b"not a video at all")
    with pytest.raises(SourceError, match="cannot be opened"):
        open_source(str(tmp_path / "fake.mp4"))
    assert describe("rtsp://admin:secret@10.0.0.7/stream1") == "rtsp://10.0.0.7/stream1"


# -- tracker ----------------------------------------------------------------------------------


def test_the_tracker_follows_people_walking_and_ends_tracks_when_they_leave() -> None:
    tracker = Tracker(lost_after=0.5)
    ids: dict[int, set[int]] = {0: set(), 1: set()}
    for step in range(20):
        t = step * 0.1
        # Two people walk towards each other in separate lanes, 30 pixels a frame.
        boxes = [
            (30.0 * step, 50.0, 30.0 * step + 60, 110.0),
            (600 - 30.0 * step, 250.0, 660 - 30.0 * step, 310.0),
        ]
        update = tracker.update(boxes, t)
        assert not update.ended
        for track, index in update.matched:
            ids[index].add(track.track_id)
    assert len(ids[0]) == 1 and len(ids[1]) == 1 and ids[0] != ids[1]
    assert tracker.update([], 2.2).ended == []
    ended = tracker.update([], 2.6).ended
    assert len(ended) == 2 and all(track.hits == 20 for track in ended)
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)


# -- quality and fusion -------------------------------------------------------------------------


def test_quality_sees_blur_size_and_a_turned_head(pipeline: FacePipeline, lfw_images: Path) -> None:
    image = load_image(lfw_images / "Colin_Powell" / "Colin_Powell_0001.jpg")
    face = pipeline.detect(image)[0]
    crop = pipeline.align(image, [face])[0]
    sharp = measure(face, crop)
    blurred = through_camera(crop, CameraCondition.MOTION_BLUR, np.random.default_rng(0))
    assert laplacian_variance(blurred) < sharp.sharpness / 3
    assert sharp.usable(smallest_face=40) and not sharp.usable(smallest_face=500)
    assert abs(sharp.yaw) < MAX_YAW
    turned = face.landmarks.copy()
    turned[2, 0] = turned[1, 0]  # the nose tip under one eye: a face turned about 45 degrees
    profile = measure(type(face)(face.box, face.score, turned), crop)
    assert abs(profile.yaw) > MAX_YAW and not profile.usable(smallest_face=40)


def test_mean_fusion_recognises_from_noisy_frames_and_vote_needs_a_majority(
    pipeline: FacePipeline, lfw_images: Path
) -> None:
    people = ["Colin_Powell", "Tony_Blair", "George_W_Bush"]
    enrolled = [pipeline.encode(lfw_images / p / f"{p}_0001.jpg")[0].embedding for p in people]
    index = TemplateIndex(people, np.stack(enrolled))

    def search(probes: np.ndarray) -> list:
        return index.search(probes, 0.4)

    frames = np.stack(
        [
            pipeline.encode(lfw_images / "Tony_Blair" / f"Tony_Blair_000{n}.jpg")[0].embedding
            for n in (2, 3, 4)
        ]
    )
    assert mean_fusion(frames, search).member_id == "Tony_Blair"
    assert vote_fusion(frames, search).member_id == "Tony_Blair"
    stranger = pipeline.encode(lfw_images / "AJ_Cook" / "AJ_Cook_0001.jpg")[0].embedding
    mixed = np.stack([frames[0], stranger, enrolled[0]])  # three frames, three answers
    assert vote_fusion(mixed, search).member_id is None
    decision = mean_fusion(stranger[None, :], search)
    assert decision.member_id is None and decision.similarity < 0.4


# -- the visit log ------------------------------------------------------------------------------


def test_the_visit_log_counts_footfall_forgets_members_and_prunes_old_events(
    tmp_path: Path,
) -> None:
    now = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)

    def visit(minutes: float, member: str | None, camera: str = "door") -> Visit:
        start = now + timedelta(minutes=minutes)
        end = start + timedelta(seconds=4)
        return Visit(camera, start, end, member, 0.61 if member else None, 3 if member else None)

    with VisitLog.open(tmp_path) as log:
        first = log.record(visit(0, "M-1"))
        log.record(visit(10, None))
        log.record(visit(40, "M-2"))  # the next hour
        log.record(visit(41, "M-1", camera="till"))
        old = log.record(visit(-60 * 24 * (EVENT_RETENTION_DAYS + 1), None))
        assert [e.event_id for e in log.events_after(first)] == [
            first + 1,
            first + 2,
            first + 3,
            old,
        ]
        counts = {
            (c.camera, c.hour.hour): (c.member_visits, c.unknown_visits) for c in log.footfall(now)
        }
        assert counts == {("door", 10): (1, 1), ("door", 11): (1, 0), ("till", 11): (1, 0)}
        assert log.totals_since(now) == (3, 1)
        assert log.prune(now) == 1
    assert forget_member_visits(tmp_path, "M-1") == 2
    with VisitLog.open(tmp_path) as log:
        assert [e.visit.member_id for e in log.events_after(0)] == [None, "M-2"]
        assert log.totals_since(now) == (3, 1)  # counts are numbers only and stay
    assert b"M-1" not in (tmp_path / "visits.db").read_bytes()
    assert forget_member_visits(tmp_path / "elsewhere", "M-1") == 0


def test_a_damaged_visit_log_is_refused_with_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "visits.db").write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(LoyalnetError, match="move it aside"):
        VisitLog.open(tmp_path)


# -- store.toml -------------------------------------------------------------------------------


def test_cameras_are_written_and_read_back_and_checked(tmp_path: Path) -> None:
    paths = StorePaths(tmp_path)
    cameras = (
        CameraSettings("entrance", "0"),
        CameraSettings("till", "rtsp://cam/1", fps=5, smallest_face=60),
    )
    write_config(paths, StoreConfig(store_id="shop-1", cameras=cameras))
    assert read_config(paths).cameras == cameras
    text = paths.config.read_text()
    for table, problem in (
        ('[[cameras]]\nname = "door"\n', "has no source"),
        ('[[cameras]]\nname = "door"\nsource = "0"\nfps = 0\n', "fps = 0 is out of range"),
        ('[[cameras]]\nname = "door"\nsource = "0"\nzoom = 2\n', "zoom = 2 is an unknown setting"),
        ('[[cameras]]\nname = "till"\nsource = "1"\n', "till are used twice"),
    ):
        paths.config.write_text(text + table)
        with pytest.raises(LoyalnetError, match=problem):
            read_config(paths)


# -- the stream benchmark's scoring ------------------------------------------------------------


def test_the_benchmark_tells_people_in_view_at_once_apart_by_name() -> None:
    from store_node.bench.stream import _Logged, _score
    from store_node.bench.stream_scene import ScriptedVisit, VisitScript

    def walk(member: str | None, lane: int, photo: str) -> ScriptedVisit:
        return ScriptedVisit(
            Path(f"/data/lfw/images/x/{photo}.jpg"), member, lane, 1.0, 300.0, 1.0, True, False
        )

    script = VisitScript((walk("M1", 0, "a"), walk("M2", 1, "b"), walk(None, 2, "c")), 10.0)
    end = script.visits[0].leaves
    # Three people at once: the events come in another order than the lanes.
    logged = [
        _Logged(1.3, end - 0.3, None),
        _Logged(1.1, end - 0.1, "M2"),
        _Logged(1.2, end - 0.2, "M1"),
    ]
    scored = _score(script, logged)
    assert (scored["visits_found"], scored["members_correct"], scored["strangers_accepted"]) == (
        3,
        2,
        0,
    )
    logged[0] = _Logged(1.3, end - 0.3, "M7")  # the stranger named as another member
    logged[2] = _Logged(1.2, end - 0.2, None)  # and M1 not recognised
    scored = _score(script, logged)
    assert (scored["members_correct"], scored["strangers_accepted"]) == (1, 1)
    assert scored["by_dataset"]["lfw"]["visits_total"] == 3 and scored["visits_extra"] == 0


def test_the_tracker_keeps_a_person_who_stops_while_unseen_for_a_moment() -> None:
    tracker = Tracker(lost_after=0.8)
    seen = set()
    for step in range(10):  # walking right at 300 pixels a second
        update = tracker.update([(30.0 * step, 50.0, 30.0 * step + 60, 110.0)], step * 0.1)
        seen |= {track.track_id for track, _ in update.matched}
    # Stopped at x = 270 and not detected for half a second: the speed would put them 150 px on.
    update = tracker.update([(270.0, 50.0, 330.0, 110.0)], 1.5)
    seen |= {track.track_id for track, _ in update.matched}
    assert len(seen) == 1 and not update.ended
