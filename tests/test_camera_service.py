"""The store's cameras end to end: a scripted entrance video of real LFW faces, a real store,
the real camera service, real SQLite, and `loyalnet store serve` as a real process."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from coordinator.pki import create_coordinator_tls, issue_person_certificate
from loyalnet.chain_tls import Role
from loyalnet.errors import LoyalnetError
from loyalnet.store.v1 import store_pb2, store_pb2_grpc
from store_node.bench.stream import draw_cast, enrol_cast
from store_node.bench.stream_scene import VisitScript, make_script, write_video
from store_node.camera.gallery_view import GalleryView
from store_node.camera.service import CameraService, CameraState, ServiceSettings
from store_node.camera.visit_log import VISITS_NAME, VisitLog
from store_node.config import (
    CameraSettings,
    LocalApiSettings,
    StoreConfig,
    StorePaths,
    write_config,
)
from store_node.enrolment import EnrolmentRequest, enrol_member
from store_node.face import FacePipeline
from store_node.gallery import Gallery, Purpose
from store_node.local_api.server import LocalApi

MEMBERS = 4
STRANGERS = 2
SEED = 3
CAMERA_FPS = 10.0


@dataclass(frozen=True)
class Entrance:
    """A store with enrolled members and a video of them (and strangers) walking in."""

    store: Path
    video: Path
    script: VisitScript
    members: list[str]


@pytest.fixture(scope="module")
def pipeline() -> FacePipeline:
    return FacePipeline.load(threads=1)


@pytest.fixture(scope="module")
def entrance(tmp_path_factory: pytest.TempPathFactory, pipeline: FacePipeline) -> Entrance:
    root = tmp_path_factory.mktemp("entrance")
    cast = draw_cast(None, members=MEMBERS, strangers=STRANGERS, seed=SEED)
    paths = StorePaths(root / "store")
    paths.root.mkdir()
    config = StoreConfig(store_id="shop-cameras")
    write_config(paths, config)
    enrol_cast(paths, config, pipeline, cast)
    probes = [(member.member_id, member.probe) for member in cast.members]
    script = make_script(probes, cast.strangers, seed=SEED, gap_seconds=(0.3, 0.8))
    video = root / "entrance.mp4"
    write_video(script, video, seed=SEED)
    return Entrance(paths.root, video, script, [member.member_id for member in cast.members])


def _copy_store(entrance: Entrance, folder: Path) -> StorePaths:
    folder.mkdir()
    for name in ("store.toml", "store.key", "gallery.db"):
        (folder / name).write_bytes((entrance.store / name).read_bytes())
    (folder / "store.key").chmod(0o600)
    return StorePaths(folder)


def _wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")


def _expected(script: VisitScript) -> list[str | None]:
    return sorted((v.member_id or "" for v in script.visits), key=str)


def test_the_cameras_log_one_visit_per_person_and_keep_nothing_biometric(
    entrance: Entrance, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    paths = _copy_store(entrance, tmp_path / "store")
    camera = CameraSettings("door", str(entrance.video), fps=CAMERA_FPS)
    service = CameraService(paths, [camera], 0.001)
    caplog.set_level(logging.DEBUG)
    service.start()
    try:
        _wait_for(service.recordings_done, 120, "the video to be recognised")
        health = service.health()[0]
        counts = service.visits_today()
    finally:
        assert service.stop(30)
    with VisitLog.open(paths.root, create=False) as log:
        events = log.events_after(0)
        footfall = log.footfall()
    named = sorted((e.visit.member_id or "" for e in events), key=str)
    assert named == _expected(entrance.script)  # one event per visit, every member named
    for event in events:
        visit = event.visit
        assert visit.camera == "door" and visit.started_at <= visit.ended_at
        if visit.member_id is None:
            assert visit.similarity is None and visit.frames_used is None
        else:
            assert visit.similarity is not None and visit.similarity > service_threshold(paths)
            assert visit.frames_used is not None and 1 <= visit.frames_used <= 3
    assert health.state is CameraState.ENDED and health.frames > 50
    assert health.member_visits == MEMBERS and health.unknown_visits == STRANGERS
    assert counts is not None and (counts.member_visits, counts.unknown_visits) == (4, 2)
    assert sum(c.member_visits for c in footfall) == MEMBERS
    assert sum(c.unknown_visits for c in footfall) == STRANGERS
    # Nothing biometric was written: the store folder holds the gallery and the visit log only,
    # the log's tables hold no vector column, and the process log names no member.
    written = {p.name for p in paths.root.iterdir()}
    assert written <= {"store.toml", "store.key", "gallery.db", VISITS_NAME} | {
        f"{name}-{suffix}" for name in ("gallery.db", VISITS_NAME) for suffix in ("wal", "shm")
    }
    with sqlite3.connect(paths.root / VISITS_NAME) as db:
        columns = {
            table: [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
            for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not table.startswith("sqlite_")
        }
        blobs = db.execute("SELECT COUNT(*) FROM visit WHERE typeof(camera) = 'blob'").fetchone()
    assert columns == {
        "visit": [
            "event_id",
            "camera",
            "started_at",
            "ended_at",
            "member_id",
            "similarity",
            "frames_used",
        ],
        "footfall": ["camera", "hour", "member_visits", "unknown_visits"],
    }
    assert blobs == (0,)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "recording ended" in logged
    for member in entrance.members:
        assert member not in logged


def service_threshold(paths: StorePaths) -> float:
    view = GalleryView(paths, 0.001, lambda: FacePipeline.load(threads=1))
    try:
        return view.threshold
    finally:
        view.close()


def test_the_view_forgets_an_erased_member_at_once_and_learns_a_new_one_in_the_background(
    entrance: Entrance, tmp_path: Path, pipeline: FacePipeline, lfw_images: Path
) -> None:
    paths = _copy_store(entrance, tmp_path / "store")
    view = GalleryView(paths, 0.001, lambda: pipeline)
    member = entrance.members[0]
    with Gallery.open(paths.database, paths.key) as gallery:
        owners, templates = gallery.searchable_templates(pipeline.model_version)
    probe = templates[owners.index(member)][None, :]
    newcomer = sorted((lfw_images / "Gerhard_Schroeder").glob("*.jpg"))
    newcomer_probe = pipeline.encode(newcomer[4])[0].embedding[None, :]
    try:
        assert view.search(probe)[0].member_id == member
        before = view.templates
        with Gallery.open(paths.database, paths.key) as gallery:  # another connection erases
            gallery.erase(member)
        match = view.search(probe)[0]  # the very next decision
        assert match.member_id != member and match.candidate_id != member
        assert view.templates < before
        config = StoreConfig(store_id="shop-cameras")
        request = EnrolmentRequest.under(config, "L-NEW", frozenset({Purpose.RECOGNITION}))
        with Gallery.open(paths.database, paths.key) as gallery:
            enrol_member(gallery, pipeline, request, newcomer[:3])
        view.search(newcomer_probe)  # sees the change, starts the rebuild, does not wait
        view.wait_for_rebuild(60)
        assert view.search(newcomer_probe)[0].member_id == "L-NEW"
        assert view.search(probe, "another-model")[0].member_id is None
    finally:
        view.close()


def test_a_camera_that_is_down_is_retried_while_the_others_go_on(
    entrance: Entrance, tmp_path: Path
) -> None:
    paths = _copy_store(entrance, tmp_path / "store")
    frames = tmp_path / "frames"
    frames.mkdir()
    reader = _video_frames(entrance.video, every=3)
    for number, pixels in enumerate(reader):
        Image.fromarray(pixels).save(frames / f"{number:05d}.jpg", quality=90)
    (frames / "00002.jpg").write_bytes(b"\xff\xd8 this is no longer a JPEG")
    cameras = [
        CameraSettings("yard", str(tmp_path / "no-such-camera.mp4")),
        CameraSettings("door", str(frames), fps=25.0),
    ]
    settings = ServiceSettings(retry_initial=0.05, retry_max=0.2)
    service = CameraService(paths, cameras, 0.001, settings)
    service.start()
    try:
        _wait_for(lambda: service.health()[1].state is CameraState.ENDED, 120, "the folder")
        _wait_for(lambda: service.health()[1].member_visits >= 1, 30, "a member visit")
        yard, door = service.health()
        assert yard.state is CameraState.DOWN and "no-such-camera.mp4" in yard.reason
        assert yard.frames == 0
        assert door.corrupt == 1 and door.frames > 20
        # The folder camera waits for new images, and reads them when they come.
        seen = door.frames
        Image.fromarray(np.full((480, 640, 3), 90, np.uint8)).save(frames / "99999.jpg")
        _wait_for(lambda: service.health()[1].frames > seen, 30, "the new image")
    finally:
        assert service.stop(30)


def _video_frames(video: Path, every: int) -> list[np.ndarray]:
    import cv2

    capture = cv2.VideoCapture(str(video))
    frames = []
    number = 0
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        if number % every == 0:
            frames.append(np.ascontiguousarray(bgr[:, :, ::-1]))
        number += 1
    capture.release()
    return frames


def _loyalnet(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LOYALNET_STORE"}
    return subprocess.run(
        [sys.executable, "-m", "loyalnet_cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_store_serve_sends_the_visits_of_a_video_to_a_grpc_client(
    entrance: Entrance, tmp_path: Path
) -> None:
    paths = _copy_store(entrance, tmp_path / "store")
    store = str(paths.root)
    address = f"127.0.0.1:{_free_port()}"
    env = {k: v for k, v in os.environ.items() if k != "LOYALNET_STORE"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loyalnet_cli",
            "store",
            "serve",
            "--store",
            store,
            "--camera",
            f"door={entrance.video}",
            "--api",
            address,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    expected = len(entrance.script.visits)
    try:
        with grpc.insecure_channel(address) as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
            client = store_pb2_grpc.StoreStub(channel)
            stream = client.StreamVisits(store_pb2.StreamVisitsRequest(), timeout=120)
            events = [next(stream) for _ in range(expected)]
            stream.cancel()
            # A client that reconnects after the second event gets the rest, nothing twice.
            again = client.StreamVisits(
                store_pb2.StreamVisitsRequest(after_event_id=events[1].event_id), timeout=5
            )
            resumed = [next(again) for _ in range(expected - 2)]
            again.cancel()
            health = client.Health(store_pb2.HealthRequest(), timeout=10)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert process.returncode == 0, stderr
    named = sorted((e.member_id if e.HasField("member_id") else "" for e in events), key=str)
    assert named == _expected(entrance.script)  # members named, strangers unknown, one each
    for event in events:
        assert event.camera == "door"
        assert event.started_at.ToDatetime() <= event.ended_at.ToDatetime()
        if not event.HasField("member_id"):
            assert not event.HasField("similarity") and not event.HasField("frames_used")
    assert [e.event_id for e in resumed] == [e.event_id for e in events[2:]]
    assert [c.name for c in health.cameras] == ["door"] and health.cameras[0].frames > 50
    assert health.templates > 0 and health.model_version
    assert "running its cameras only" in stderr and "SIGTERM received" in stderr
    assert f"local API listening on {address}" in stderr
    assert "Traceback" not in stderr
    for member in entrance.members:
        assert member not in stderr
    # The same events from the command line; erasing a member removes theirs, not the counts.
    listed = json.loads(_loyalnet("store", "visits", "--store", store, "--json").stdout)["events"]
    assert [e["event"] for e in listed] == [e.event_id for e in events]
    footfall = json.loads(_loyalnet("store", "footfall", "--store", store, "--json").stdout)
    assert sum(row["member_visits"] for row in footfall["footfall"]) == MEMBERS
    member = entrance.members[1]
    erased = _loyalnet("store", "erase", member, "--store", store, "--yes", "--json")
    assert json.loads(erased.stdout)["visit_events_removed"] == 1
    listed = json.loads(_loyalnet("store", "visits", "--store", store, "--json").stdout)["events"]
    assert member not in {e["member"] for e in listed} and len(listed) == expected - 1
    assert member.encode() not in (paths.root / VISITS_NAME).read_bytes()
    footfall = json.loads(_loyalnet("store", "footfall", "--store", store, "--json").stdout)
    assert sum(row["member_visits"] for row in footfall["footfall"]) == MEMBERS


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_enrol_identify_erase_and_health_over_the_local_api(
    entrance: Entrance, tmp_path: Path, pipeline: FacePipeline, lfw_images: Path
) -> None:
    paths = _copy_store(entrance, tmp_path / "store")
    view = GalleryView(paths, 0.001, lambda: pipeline)
    api = LocalApi(paths, LocalApiSettings(address="127.0.0.1:0"), view)
    api.start()
    photos = sorted((lfw_images / "Gerhard_Schroeder").glob("*.jpg"))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{api.port}") as channel:
            client = store_pb2_grpc.StoreStub(channel)
            enrolled = client.Enrol(
                store_pb2.EnrolRequest(
                    member_id="L-77",
                    purposes=["recognition"],
                    display_name="Gerhard",
                    photos=[p.read_bytes() for p in photos[:3]] + [b"not a photo"],
                ),
                timeout=60,
            )
            assert enrolled.templates_added == 3
            assert [o.accepted for o in enrolled.photos] == [True, True, True, False]
            assert enrolled.consent_expires_at.seconds > time.time()
            probe = store_pb2.IdentifyRequest(photo=photos[5].read_bytes())
            found = client.Identify(probe, timeout=60)
            assert [f.member_id for f in found.faces] == ["L-77"] and len(found.faces[0].box) == 4
            assert found.faces[0].similarity > found.threshold
            for call, request, status, fragment in (
                (
                    client.Identify,
                    store_pb2.IdentifyRequest(photo=b"GIF89a junk"),
                    "INVALID_ARGUMENT",
                    "cannot read",
                ),
                (client.Identify, store_pb2.IdentifyRequest(), "INVALID_ARGUMENT", "no photo"),
                (
                    client.Enrol,
                    store_pb2.EnrolRequest(
                        member_id="L-78", purposes=["marketing"], photos=[photos[0].read_bytes()]
                    ),
                    "INVALID_ARGUMENT",
                    "marketing",
                ),
                (
                    client.Erase,
                    store_pb2.EraseRequest(member_id="L-404"),
                    "NOT_FOUND",
                    "no such member",
                ),
                (
                    client.StreamVisits,
                    store_pb2.StreamVisitsRequest(after_event_id=-1),
                    "INVALID_ARGUMENT",
                    "after_event_id",
                ),
            ):
                with pytest.raises(grpc.RpcError) as refused:
                    reply = call(request, timeout=30)
                    if call is client.StreamVisits:
                        next(iter(reply))
                assert refused.value.code().name == status
                assert fragment in (refused.value.details() or "")
            erased = client.Erase(store_pb2.EraseRequest(member_id="L-77"), timeout=30)
            assert erased.receipt_id and erased.templates_removed == 3
            again = client.Identify(probe, timeout=60)
            assert [f.HasField("member_id") for f in again.faces] == [False]
            health = client.Health(store_pb2.HealthRequest(), timeout=10)
            assert health.model_version == pipeline.model_version and not health.cameras
    finally:
        assert api.stop(10)
        view.close()


def test_the_local_api_speaks_mutual_tls_when_configured(
    entrance: Entrance, tmp_path: Path, pipeline: FacePipeline
) -> None:
    paths = _copy_store(entrance, tmp_path / "store")
    tls = create_coordinator_tls(tmp_path / "tls", "shop", hosts=["127.0.0.1"])
    issue_person_certificate(
        tls, "till-1", Role.VIEWER, tmp_path / "till.crt", tmp_path / "till.key"
    )
    view = GalleryView(paths, 0.001, lambda: pipeline)
    with pytest.raises(LoyalnetError, match="without TLS"):
        LocalApi(paths, LocalApiSettings(address="0.0.0.0:0"), view).start()
    settings = LocalApiSettings(
        address="127.0.0.1:0",
        certificate=str(tls.server_certificate),
        key=str(tls.server_key),
        client_ca=str(tls.ca_certificate),
    )
    api = LocalApi(paths, settings, view)
    api.start()
    ca = tls.ca_certificate.read_bytes()
    try:
        mutual = grpc.ssl_channel_credentials(
            ca, (tmp_path / "till.key").read_bytes(), (tmp_path / "till.crt").read_bytes()
        )
        with grpc.secure_channel(f"127.0.0.1:{api.port}", mutual) as channel:
            health = store_pb2_grpc.StoreStub(channel).Health(store_pb2.HealthRequest(), timeout=30)
            assert health.templates > 0
        with grpc.secure_channel(
            f"127.0.0.1:{api.port}", grpc.ssl_channel_credentials(ca)
        ) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                store_pb2_grpc.StoreStub(channel).Health(store_pb2.HealthRequest(), timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        plain = grpc.insecure_channel(f"127.0.0.1:{api.port}")
        with plain, pytest.raises(grpc.RpcError):
            store_pb2_grpc.StoreStub(plain).Health(store_pb2.HealthRequest(), timeout=5)
    finally:
        assert api.stop(10)
        view.close()


def test_serve_refuses_a_bad_camera_option_and_a_store_without_cameras(
    entrance: Entrance, tmp_path: Path
) -> None:
    paths = _copy_store(entrance, tmp_path / "store")
    done = _loyalnet("store", "serve", "--store", str(paths.root), "--camera", "door")
    assert done.returncode != 0 and "is not NAME=SOURCE" in done.stderr
    done = _loyalnet("store", "serve", "--store", str(paths.root))
    assert done.returncode != 0 and "no control plane address" in done.stderr
    done = _loyalnet("store", "visits", "--store", str(paths.root))
    assert done.returncode != 0 and "no camera has recorded a visit" in done.stderr
