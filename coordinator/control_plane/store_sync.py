"""``StoreSync``: what a store says to the coordinator, and what it is told to do.

Every call first establishes which store is calling from its certificate (:mod:`.callers`);
nothing a store sends can make it speak for another. A receipt is accepted only when its
signature verifies with the store's registered key and it names the command and the store it
answers; the first accepted receipt of a command stands.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from datetime import datetime

import grpc
from cryptography.hazmat.primitives.asymmetric import ec

from coordinator.control_plane.callers import Callers, KnownStore
from coordinator.control_plane.convert import command_message, timestamp
from coordinator.control_plane.heartbeats import HeartbeatBuffer
from coordinator.control_plane.model_files import ModelFiles
from coordinator.registry import CommandRecord, Heartbeat, Registry
from loyalnet.chain.v1 import chain_pb2, chain_pb2_grpc
from loyalnet.receipts import ERASURE_STATEMENT, ReceiptError, verify_receipt

log = logging.getLogger(__name__)

MAX_COMMANDS_PER_PULL = 100
MODEL_CHUNK_BYTES = 1 << 20


class StoreSyncService(chain_pb2_grpc.StoreSyncServicer):
    """The coordinator's side of ``loyalnet.chain.v1.StoreSync``."""

    def __init__(
        self,
        registry: Registry,
        callers: Callers,
        heartbeats: HeartbeatBuffer,
        models: ModelFiles,
        clock: Callable[[], datetime],
        heartbeat_seconds: int,
    ) -> None:
        self._registry = registry
        self._callers = callers
        self._heartbeats = heartbeats
        self._models = models
        self._clock = clock
        self._heartbeat_seconds = heartbeat_seconds

    def Heartbeat(
        self, request: chain_pb2.HeartbeatRequest, context: grpc.ServicerContext
    ) -> chain_pb2.HeartbeatReply:
        store = self._callers.store(context)
        now = self._clock()
        # Field by field, not MessageToDict: that writes 64-bit counts as JSON strings.
        health = {
            field.name: getattr(request.health, field.name)
            for field in request.health.DESCRIPTOR.fields
        }
        pending = self._heartbeats.add(
            Heartbeat(
                store=store.name,
                at=now,
                health=health,
                model_version=request.health.model_version,
            )
        )
        return chain_pb2.HeartbeatReply(
            pending_commands=pending,
            server_time=timestamp(now),
            heartbeat_interval_seconds=self._heartbeat_seconds,
        )

    def PullCommands(
        self, request: chain_pb2.PullCommandsRequest, context: grpc.ServicerContext
    ) -> chain_pb2.PullCommandsReply:
        store = self._callers.store(context)
        limit = min(request.max_commands or MAX_COMMANDS_PER_PULL, MAX_COMMANDS_PER_PULL)
        commands = self._registry.pending_commands(store.name, limit)
        return chain_pb2.PullCommandsReply(commands=[command_message(c) for c in commands])

    def Acknowledge(
        self, request: chain_pb2.AcknowledgeRequest, context: grpc.ServicerContext
    ) -> chain_pb2.AcknowledgeReply:
        store = self._callers.store(context)
        command = self._registry.get_command(request.command_id)
        if command is None or command.store != store.name:
            context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no command {request.command_id!r} was queued for store {store.name!r}.",
            )
        body, signature = request.receipt.body, request.receipt.signature
        try:
            fields = verify_receipt(body, signature, _public_key(store))
            outcome = _outcome(command, fields, store.name)
        except ReceiptError as err:
            self._registry.audit(
                f"store:{store.name}",
                "receipt-rejected",
                request.command_id,
                {"reason": str(err)},
                self._clock(),
            )
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"receipt refused: {err}")
        accepted = self._registry.acknowledge(
            command_id=command.command_id,
            store=store.name,
            outcome=outcome,
            receipt_body=body,
            receipt_signature=signature,
            verified=True,
            at=self._clock(),
        )
        if accepted and outcome == "refused":
            self._registry.audit(
                f"store:{store.name}",
                "model-refused",
                f"v{command.payload.get('version')}",
                {"command_id": command.command_id, "reason": str(fields.get("reason", ""))},
                self._clock(),
            )
        if accepted:
            self._heartbeats.command_acknowledged(store.name)
            log.info("store %s: command %s %s", store.name, command.command_id, outcome)
        return chain_pb2.AcknowledgeReply(accepted=accepted)

    def FetchModel(
        self, request: chain_pb2.FetchModelRequest, context: grpc.ServicerContext
    ) -> Iterator[chain_pb2.ModelChunk]:
        self._callers.store(context)
        path = self._models.weights_file(request.version)
        if path is None:
            context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"model version {request.version} is not in this coordinator's registry.",
            )
        total = path.stat().st_size
        with path.open("rb") as weights:
            offset = 0
            while chunk := weights.read(MODEL_CHUNK_BYTES):
                yield chain_pb2.ModelChunk(data=chunk, offset=offset, total_bytes=total)
                offset += len(chunk)


def _public_key(store: KnownStore) -> ec.EllipticCurvePublicKey:
    if store.public_key is None:
        raise ReceiptError(f"store {store.name!r} has no ECDSA key registered.")
    return store.public_key


def _outcome(command: CommandRecord, fields: dict[str, object], store: str) -> str:
    """What the receipt says was done: ``erased``, ``adopted`` or ``refused``.

    Raises:
        ReceiptError: the receipt answers another command, comes from another store, or says
            something this command cannot be answered with.
    """
    if fields.get("command_id") != command.command_id or fields.get("store") != store:
        raise ReceiptError(
            f"the receipt names command {fields.get('command_id')!r} of store "
            f"{fields.get('store')!r}, not {command.command_id!r} of {store!r}."
        )
    if fields.get("kind") == "unsupported" and fields.get("outcome") == "refused":
        # A store older than this command kind refuses it, and says so.
        return "refused"
    if fields.get("kind") != command.kind:
        raise ReceiptError(f"a {fields.get('kind')!r} receipt cannot answer a {command.kind}.")
    if command.kind == "erase-member":
        expected = {
            "request_id": command.payload.get("request_id"),
            "member_id": command.payload.get("member_id"),
            "statement": ERASURE_STATEMENT,
        }
        wrong = {
            key: fields.get(key) for key, value in expected.items() if fields.get(key) != value
        }
        if wrong:
            raise ReceiptError(
                f"the erasure receipt does not match its command: {json.dumps(wrong)}"
            )
        return "erased"
    outcome = fields.get("outcome")
    if outcome not in ("adopted", "refused") or fields.get("version") != command.payload.get(
        "version"
    ):
        raise ReceiptError(
            f"the adoption receipt says {outcome!r} for version {fields.get('version')!r}; "
            f"version {command.payload.get('version')!r} was asked."
        )
    return str(outcome)
