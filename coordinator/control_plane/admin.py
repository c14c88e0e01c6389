"""``Admin``: what the chain's admins read and do, refused to viewers, and audited.

Reads need an admin or a viewer certificate; acts need an admin one (:mod:`.callers`). Each
act is recorded in the audit log with the admin's name (the certificate's CN) in the same
transaction as the change itself (``coordinator.registry``).

A promotion or rollback becomes one ``adopt-model`` command per store that is not revoked; an
erasure request one ``erase-member`` command per store, complete once every store answered with
a verified receipt. Stores offline now get their commands when they come back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Protocol

import grpc

from coordinator.control_plane.callers import Callers
from coordinator.control_plane.convert import (
    audit_message,
    erasure_message,
    event_message,
    model_message,
    run_message,
    run_settings,
    store_message,
)
from coordinator.control_plane.heartbeats import HeartbeatBuffer
from coordinator.control_plane.model_files import ModelFiles, last_round_metrics
from coordinator.errors import CoordinatorError, RunConfigError
from coordinator.registry import Registry, RegistryError, Rollout, RunRecord, StoreRecord
from coordinator.toml_text import TomlScalar
from loyalnet.chain.v1 import chain_pb2, chain_pb2_grpc
from loyalnet.member_ids import member_id_problem

MAX_WATCHERS = 16
"""Live event streams served at once; each holds a server thread while it is open."""
WATCH_POLL_SECONDS = 0.5
OFFLINE_AFTER_HEARTBEATS = 3
"""A store is offline once this many heartbeat intervals passed without one."""


class TrainingLauncher(Protocol):
    """Starts a federated training run on the coordinator's SuperLink."""

    def start(
        self,
        rounds: int,
        requested_by: str,
        settings: Mapping[str, TomlScalar] | None = None,
    ) -> RunRecord:
        """Start a run of ``rounds`` rounds (0: the default) and return its record.

        Args:
            settings: run config values other than the defaults (``coordinator.run_config``).

        Raises:
            RunConfigError: a setting is out of range.
            CoordinatorError: no run can start now (e.g. one is running, no SuperLink).
        """
        ...


class AdminService(chain_pb2_grpc.AdminServicer):
    """The coordinator's side of ``loyalnet.chain.v1.Admin``."""

    def __init__(
        self,
        registry: Registry,
        callers: Callers,
        heartbeats: HeartbeatBuffer,
        models: ModelFiles,
        clock: Callable[[], datetime],
        chain: str,
        heartbeat_seconds: int,
        training: TrainingLauncher | None = None,
        refresh_models: Callable[[], object] | None = None,
    ) -> None:
        self._registry = registry
        # Versions written since the last scan (a run just ended, a demo saved one) are entered
        # before models are listed or promoted, so an admin never waits for the periodic scan.
        self._refresh_models = refresh_models or (lambda: None)
        self._callers = callers
        self._heartbeats = heartbeats
        self._models = models
        self._clock = clock
        self._chain = chain
        self._heartbeat_seconds = heartbeat_seconds
        self._training = training
        self._watchers = threading.BoundedSemaphore(MAX_WATCHERS)
        self._stopping = threading.Event()

    def attach_training(self, training: TrainingLauncher) -> None:
        """Let admins start training runs (the coordinator runs a SuperLink)."""
        self._training = training

    def stop(self) -> None:
        """End every open event stream (the server is going down)."""
        self._stopping.set()

    # -- reading ----------------------------------------------------------------------------

    def WhoAmI(
        self, request: chain_pb2.WhoAmIRequest, context: grpc.ServicerContext
    ) -> chain_pb2.WhoAmIReply:
        peer = self._callers.reader(context)
        return chain_pb2.WhoAmIReply(name=peer.name, role=peer.role.value, chain=self._chain)

    def ListStores(
        self, request: chain_pb2.ListStoresRequest, context: grpc.ServicerContext
    ) -> chain_pb2.ListStoresReply:
        self._callers.reader(context)
        now = self._clock()
        seen = self._heartbeats.last_seen()
        pending = self._heartbeats.pending_counts()
        stores = []
        for store in self._registry.list_stores():
            last = _newest(store.last_seen, seen.get(store.name))
            stores.append(
                store_message(store, self._online(last, now), pending.get(store.name, 0), last)
            )
        return chain_pb2.ListStoresReply(stores=stores)

    def ListRuns(
        self, request: chain_pb2.ListRunsRequest, context: grpc.ServicerContext
    ) -> chain_pb2.ListRunsReply:
        self._callers.reader(context)
        return chain_pb2.ListRunsReply(runs=[run_message(r) for r in self._registry.list_runs()])

    def ListModels(
        self, request: chain_pb2.ListModelsRequest, context: grpc.ServicerContext
    ) -> chain_pb2.ListModelsReply:
        self._callers.reader(context)
        self._refresh_models()
        promoted = self._registry.promoted_version()
        running = self._registry.stores_by_model_version()
        models = [
            model_message(
                model,
                model.version == promoted,
                running.get(model.version, []),
                last_round_metrics(model.manifest_json),
            )
            for model in self._registry.list_model_versions()
        ]
        return chain_pb2.ListModelsReply(models=models, promoted_version=promoted)

    def GetErasure(
        self, request: chain_pb2.GetErasureRequest, context: grpc.ServicerContext
    ) -> chain_pb2.Erasure:
        self._callers.reader(context)
        erasure = self._registry.get_erasure(request.request_id)
        if erasure is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no erasure request {request.request_id!r}.")
        return erasure_message(erasure)

    def ListErasures(
        self, request: chain_pb2.ListErasuresRequest, context: grpc.ServicerContext
    ) -> chain_pb2.ListErasuresReply:
        self._callers.reader(context)
        return chain_pb2.ListErasuresReply(
            erasures=[erasure_message(e) for e in self._registry.list_erasures()]
        )

    def ReadAudit(
        self, request: chain_pb2.ReadAuditRequest, context: grpc.ServicerContext
    ) -> chain_pb2.ReadAuditReply:
        self._callers.reader(context)
        records = self._registry.read_audit(
            limit=min(request.limit or 200, 1000),
            before_id=request.before_id or None,
            action=request.action or None,
        )
        return chain_pb2.ReadAuditReply(records=[audit_message(r) for r in records])

    def WatchEvents(
        self, request: chain_pb2.WatchEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[chain_pb2.ChainEvent]:
        self._callers.reader(context)
        if not self._watchers.acquire(blocking=False):
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{MAX_WATCHERS} event streams are open already; close one or try again later.",
            )
        try:
            after = request.after_event_id
            if after == 0:
                after = self._registry.last_audit_id()
            while context.is_active() and not self._stopping.is_set():
                records = self._registry.audit_after(after, 100)
                for record in records:
                    yield event_message(record)
                    after = record.id
                if not records:
                    self._stopping.wait(WATCH_POLL_SECONDS)
        finally:
            self._watchers.release()

    # -- acting ----------------------------------------------------------------------------

    def RequestErasure(
        self, request: chain_pb2.RequestErasureRequest, context: grpc.ServicerContext
    ) -> chain_pb2.Erasure:
        peer = self._callers.admin(context)
        problem = member_id_problem(request.member_id)
        if problem is not None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        stores = self._active_stores()
        if not stores:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "the chain has no registered store to erase the member in; register stores "
                "first (`loyalnet coordinator register-store`).",
            )
        erasure = self._registry.request_erasure(
            request.member_id, peer.actor, [s.name for s in stores], self._clock()
        )
        self._heartbeats.commands_queued({s.name: 1 for s in stores})
        return erasure_message(erasure)

    def Promote(
        self, request: chain_pb2.PromoteRequest, context: grpc.ServicerContext
    ) -> chain_pb2.Rollout:
        peer = self._callers.admin(context)
        version = request.version
        if version > 0:
            self._refresh_models()
            model = self._registry.get_model_version(version)
            if model is None:
                context.abort(
                    grpc.StatusCode.NOT_FOUND,
                    f"no model version {version}; `loyalnet admin models` lists them.",
                )
            if not model.signature_verified:
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"model version {version} is not signed by the chain's model-signing key; "
                    "stores would refuse it, so it cannot be promoted.",
                )
            if not self._models.intact(model):
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"model version {version}'s file no longer matches its sha256 "
                    f"{model.sha256[:12]}…; restore {model.file_name} from a backup.",
                )
        try:
            rollout = self._registry.promote(version, peer.actor, self._clock())
        except RegistryError as err:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(err))
        return self._roll_out(rollout)

    def Rollback(
        self, request: chain_pb2.RollbackRequest, context: grpc.ServicerContext
    ) -> chain_pb2.Rollout:
        peer = self._callers.admin(context)
        try:
            rollout = self._registry.rollback(peer.actor, self._clock())
        except RegistryError as err:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(err))
        return self._roll_out(rollout)

    def StartTraining(
        self, request: chain_pb2.StartTrainingRequest, context: grpc.ServicerContext
    ) -> chain_pb2.TrainingRun:
        peer = self._callers.admin(context)
        if self._training is None:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this coordinator serves without a SuperLink (--no-superlink); start it "
                "without that option to train.",
            )
        try:
            run = self._training.start(request.rounds, peer.actor, run_settings(request))
        except RunConfigError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except CoordinatorError as err:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(err))
        return run_message(run)

    # -- helpers ---------------------------------------------------------------------------

    def _roll_out(self, rollout: Rollout) -> chain_pb2.Rollout:
        """Count the adopt-model commands the registry queued with the promotion."""
        if rollout.stores_commanded:
            self._heartbeats.commands_queued({s.name: 1 for s in self._active_stores()})
        return chain_pb2.Rollout(
            version=rollout.version,
            previous_version=rollout.previous_version,
            stores_commanded=rollout.stores_commanded,
        )

    def _active_stores(self) -> list[StoreRecord]:
        return [s for s in self._registry.list_stores() if s.revoked_at is None]

    def _online(self, last_seen: datetime | None, now: datetime) -> bool:
        limit = timedelta(seconds=OFFLINE_AFTER_HEARTBEATS * self._heartbeat_seconds)
        return last_seen is not None and now - last_seen <= limit


def _newest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return max(a, b)
