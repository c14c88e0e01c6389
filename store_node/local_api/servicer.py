"""The ``loyalnet.store.v1.Store`` service: visits, enrolment, identification, erasure, health.

Every refusal is a gRPC status with a message that says what to do: INVALID_ARGUMENT for a
request that cannot be right (no photo usable, an unknown purpose, an oversized photo),
NOT_FOUND for a member the store does not have, UNAVAILABLE while another program holds the
gallery's write lock (try again). A message never carries a face, and the log never names a
member.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from loyalnet.store.v1 import store_pb2, store_pb2_grpc
from store_node.camera.gallery_view import GalleryView
from store_node.camera.service import CameraService
from store_node.camera.visit_log import VisitEvent, VisitLog, forget_member_visits
from store_node.config import StorePaths, read_config
from store_node.enrolment import EnrolmentError, EnrolmentRequest, enrol_member
from store_node.gallery import Gallery, GalleryBusyError, GalleryError, parse_purposes
from store_node.gallery.errors import UnknownMemberError
from store_node.identification import identify_photos

log = logging.getLogger("loyalnet.store.api")

MAX_PHOTO_BYTES = 10 * 2**20
MAX_PHOTOS = 20
POLL_SECONDS = 0.2
"""How often a visit stream looks for new events."""
_BATCH = 500


def _timestamp(moment: datetime | None) -> Timestamp:
    stamp = Timestamp()
    if moment is not None:
        stamp.FromDatetime(moment)
    return stamp


def visit_message(event: VisitEvent) -> store_pb2.VisitEvent:
    """The wire form of one event; an unknown visit sets no member field."""
    visit = event.visit
    message = store_pb2.VisitEvent(
        event_id=event.event_id,
        camera=visit.camera,
        started_at=_timestamp(visit.started_at),
        ended_at=_timestamp(visit.ended_at),
    )
    if visit.member_id is not None:
        message.member_id = visit.member_id
        if visit.similarity is not None:
            message.similarity = visit.similarity
        if visit.frames_used is not None:
            message.frames_used = visit.frames_used
    return message


class StoreServicer(store_pb2_grpc.StoreServicer):
    """Answers the store's own systems.

    Args:
        paths: the store folder.
        view: the gallery view the cameras search (its pipeline and threshold are used).
        cameras: the camera service, for health; None when the store runs no camera.
        stopping: set when the server stops: open visit streams end.
    """

    def __init__(
        self,
        paths: StorePaths,
        view: GalleryView,
        cameras: CameraService | None,
        stopping: threading.Event,
    ) -> None:
        self._paths = paths
        self._view = view
        self._cameras = cameras
        self._stopping = stopping

    def StreamVisits(
        self, request: store_pb2.StreamVisitsRequest, context: grpc.ServicerContext
    ) -> Iterator[store_pb2.VisitEvent]:
        if request.after_event_id < 0:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "after_event_id must be 0 (every kept event) or the id of an event seen.",
            )
        after = request.after_event_id
        with VisitLog.open(self._paths.root) as visits:
            while context.is_active() and not self._stopping.is_set():
                events = visits.events_after(after, _BATCH)
                for event in events:
                    yield visit_message(event)
                    after = event.event_id
                if len(events) < _BATCH:
                    time.sleep(POLL_SECONDS)

    def Enrol(
        self, request: store_pb2.EnrolRequest, context: grpc.ServicerContext
    ) -> store_pb2.EnrolReply:
        photos = self._photos(list(request.photos), context)
        try:
            purposes = parse_purposes(",".join(request.purposes))
        except GalleryError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        config = read_config(self._paths)
        enrolment = EnrolmentRequest.under(
            config,
            request.member_id,
            purposes,
            display_name=request.display_name or None,
            tier=request.tier or None,
        )
        try:
            with Gallery.open(self._paths.database, self._paths.key) as gallery:
                report = enrol_member(gallery, self._view.pipeline, enrolment, photos)
        except GalleryBusyError as err:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{err}; try again.")
        except (EnrolmentError, GalleryError) as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        log.info("enrolment: %d template(s) added", report.templates_added)
        return store_pb2.EnrolReply(
            templates_added=report.templates_added,
            photos=[
                store_pb2.PhotoOutcome(index=i, accepted=o.accepted, reason=o.reason)
                for i, o in enumerate(report.photos)
            ],
            consent_expires_at=_timestamp(report.consent.expires_at),
        )

    def Identify(
        self, request: store_pb2.IdentifyRequest, context: grpc.ServicerContext
    ) -> store_pb2.IdentifyReply:
        (photo,) = self._photos([request.photo], context)
        threshold = self._view.threshold
        with Gallery.open(self._paths.database, self._paths.key) as gallery:
            (result,) = identify_photos(gallery, self._view.pipeline, [photo], threshold)
        if result.error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, result.error)
        faces = []
        for decision in result.faces:
            face = store_pb2.IdentifiedFace(
                box=list(decision.box), similarity=decision.match.similarity
            )
            if decision.match.member_id is not None:
                face.member_id = decision.match.member_id
            faces.append(face)
        return store_pb2.IdentifyReply(faces=faces, threshold=threshold)

    def Erase(
        self, request: store_pb2.EraseRequest, context: grpc.ServicerContext
    ) -> store_pb2.EraseReply:
        try:
            with Gallery.open(self._paths.database, self._paths.key) as gallery:
                receipt = gallery.erase(request.member_id)
        except UnknownMemberError:
            context.abort(
                grpc.StatusCode.NOT_FOUND,
                "no such member in this store (or already erased); check the member id.",
            )
        except GalleryBusyError as err:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{err}; try again.")
        except GalleryError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        removed = forget_member_visits(self._paths.root, request.member_id)
        log.info("erasure: receipt %s", receipt.receipt_id)
        return store_pb2.EraseReply(
            receipt_id=receipt.receipt_id,
            templates_removed=receipt.templates_removed,
            crops_removed=receipt.crops_removed,
            consents_removed=receipt.consents_removed,
            visit_events_removed=removed,
        )

    def Health(
        self, request: store_pb2.HealthRequest, context: grpc.ServicerContext
    ) -> store_pb2.HealthReply:
        cameras = []
        for health in self._cameras.health() if self._cameras is not None else []:
            cameras.append(
                store_pb2.CameraHealth(
                    name=health.name,
                    state=str(health.state),
                    reason=health.reason,
                    fps=health.fps,
                    last_frame_at=_timestamp(health.last_frame_at),
                    frames=health.frames,
                    dropped_frames=health.dropped,
                    corrupt_frames=health.corrupt,
                )
            )
        return store_pb2.HealthReply(
            cameras=cameras,
            templates=self._view.templates,
            threshold=self._view.threshold,
            model_version=self._view.pipeline.model_version,
        )

    def _photos(self, photos: list[bytes], context: grpc.ServicerContext) -> list[bytes]:
        if not photos or not any(photos):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no photo was sent.")
        if len(photos) > MAX_PHOTOS:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{len(photos)} photos were sent; send at most {MAX_PHOTOS}.",
            )
        for index, photo in enumerate(photos):
            if len(photo) > MAX_PHOTO_BYTES:
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"photo {index} has {len(photo)} bytes; send photos of at most "
                    f"{MAX_PHOTO_BYTES // 2**20} MiB (JPEG or PNG).",
                )
        return photos
