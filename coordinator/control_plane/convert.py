"""Registry records to ``loyalnet.chain.v1`` messages: one function per message, no logic."""

from __future__ import annotations

import json
from datetime import datetime

from google.protobuf.json_format import ParseDict
from google.protobuf.timestamp_pb2 import Timestamp

from coordinator.registry import (
    AuditRecord,
    CommandRecord,
    ErasureRecord,
    ModelVersionRecord,
    RunRecord,
    StoreRecord,
)
from coordinator.toml_text import TomlScalar
from loyalnet.chain.v1 import chain_pb2


def timestamp(at: datetime | None) -> Timestamp | None:
    """A protobuf Timestamp of an aware datetime; None stays unset."""
    if at is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(at)
    return stamp


def command_message(command: CommandRecord) -> chain_pb2.Command:
    message = chain_pb2.Command(
        command_id=command.command_id, issued_at=timestamp(command.issued_at)
    )
    payload = command.payload
    if command.kind == "erase-member":
        message.erase_member.CopyFrom(
            chain_pb2.EraseMember(
                request_id=str(payload["request_id"]), member_id=str(payload["member_id"])
            )
        )
    else:
        message.adopt_model.CopyFrom(
            chain_pb2.AdoptModel(
                version=_whole(payload["version"]),
                sha256=str(payload.get("sha256", "")),
                size_bytes=_whole(payload.get("size_bytes", 0)),
                manifest_json=str(payload.get("manifest_json", "")),
            )
        )
    return message


def store_message(
    store: StoreRecord, online: bool, pending: int, last_seen: datetime | None
) -> chain_pb2.Store:
    health = chain_pb2.StoreHealth()
    if store.last_health:
        ParseDict(store.last_health, health, ignore_unknown_fields=True)
    return chain_pb2.Store(
        name=store.name,
        online=online,
        last_seen=timestamp(last_seen),
        registered_at=timestamp(store.registered_at),
        revoked=store.revoked_at is not None,
        health=health,
        pending_commands=pending,
    )


def erasure_message(erasure: ErasureRecord) -> chain_pb2.Erasure:
    return chain_pb2.Erasure(
        request_id=erasure.request_id,
        member_id=erasure.member_id,
        requested_at=timestamp(erasure.requested_at),
        requested_by=erasure.requested_by,
        complete=erasure.complete,
        stores=[
            chain_pb2.StoreErasure(
                store=answer.store,
                state=answer.state,
                receipt_verified=answer.receipt_verified,
                answered_at=timestamp(answer.answered_at),
                receipt_json=(answer.receipt_body or b"").decode("ascii", "replace"),
            )
            for answer in erasure.stores
        ],
    )


def model_message(
    model: ModelVersionRecord, promoted: bool, stores_running: list[str], metrics: dict[str, float]
) -> chain_pb2.ModelVersion:
    return chain_pb2.ModelVersion(
        version=model.version,
        sha256=model.sha256,
        size_bytes=model.size_bytes,
        created_at=timestamp(model.created_at),
        signature_verified=model.signature_verified,
        signing_key_id=model.signing_key_id or "",
        promoted=promoted,
        stores_running=stores_running,
        metrics=metrics,
        run_id=model.run_id or 0,
    )


def run_message(run: RunRecord) -> chain_pb2.TrainingRun:
    return chain_pb2.TrainingRun(
        run_id=run.run_id,
        status=run.status,
        rounds_planned=run.rounds_planned,
        started_at=timestamp(run.started_at),
        finished_at=timestamp(run.finished_at),
        rounds=[
            chain_pb2.TrainingRound(round=done.round, metrics=done.metrics) for done in run.rounds
        ],
        model_version=run.model_version or 0,
        message=run.message or "",
    )


def run_settings(request: chain_pb2.StartTrainingRequest) -> dict[str, TomlScalar]:
    """The run config values a training request sets; unset (empty, zero) ones are left out."""
    settings: dict[str, TomlScalar] = {}
    if request.strategy:
        settings["strategy"] = request.strategy
    if request.local_epochs:
        settings["local-epochs"] = request.local_epochs
    if request.learning_rate:
        settings["learning-rate"] = request.learning_rate
    if request.min_stores:
        settings["min-stores"] = request.min_stores
    if request.update_encoding:
        settings["update-encoding"] = request.update_encoding
    if request.release_mix:
        settings["release-mix"] = request.release_mix
    return settings


def audit_message(record: AuditRecord) -> chain_pb2.AuditRecord:
    return chain_pb2.AuditRecord(
        id=record.id,
        at=timestamp(record.at),
        actor=record.actor,
        action=record.action,
        subject=record.subject,
        details_json=json.dumps(record.details, sort_keys=True),
    )


def event_message(record: AuditRecord) -> chain_pb2.ChainEvent:
    return chain_pb2.ChainEvent(
        event_id=record.id,
        at=timestamp(record.at),
        kind=record.action,
        subject=record.subject,
        details_json=json.dumps(record.details, sort_keys=True),
    )


def _whole(value: object) -> int:
    """A payload's whole number (the registry validated it when the command was queued)."""
    if not isinstance(value, int):
        raise TypeError(f"expected a whole number in a command payload, got {value!r}")
    return value
