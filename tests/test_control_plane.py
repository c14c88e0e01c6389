"""The control plane's services over real mutual TLS on 127.0.0.1, on SQLite and PostgreSQL.

Stores here are played by the test with real keys and certificates from the chain's CA; the
store's own agent is tested in test_store_sync.py and the whole chain in test_chain.py.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
import torch
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from coordinator.control_plane.convert import run_settings
from coordinator.control_plane.server import ControlPlane, ControlPlaneSettings
from coordinator.control_plane.training import FederatedTraining
from coordinator.home import create_coordinator_home
from coordinator.model_versions import save_model_version
from coordinator.pki import (
    CoordinatorTls,
    issue_person_certificate,
    issue_store_certificate,
    load_model_signing_key,
)
from coordinator.processes import LocalFederation
from coordinator.registry import Registry, open_registry
from loyalnet.chain.v1 import chain_pb2, chain_pb2_grpc
from loyalnet.chain_tls import ClientIdentity, Role, private_key_pem
from loyalnet.receipts import ERASURE_STATEMENT, sign_receipt


@dataclass
class Chain:
    """A running control plane, its registry and the chain's TLS material."""

    plane: ControlPlane
    registry: Registry
    tls: CoordinatorTls
    folder: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.plane.port}"

    def channel(self, identity: ClientIdentity) -> grpc.Channel:
        return grpc.secure_channel(self.address, identity.credentials())

    def admin(self) -> chain_pb2_grpc.AdminStub:
        identity = ClientIdentity.from_files(
            self.tls.ca_certificate, self.tls.admin_certificate, self.tls.admin_key
        )
        return chain_pb2_grpc.AdminStub(self.channel(identity))

    def viewer(self) -> chain_pb2_grpc.AdminStub:
        certificate, key = self.folder / "vera.crt", self.folder / "vera.key"
        if not certificate.exists():
            issue_person_certificate(self.tls, "vera", Role.VIEWER, certificate, key)
        identity = ClientIdentity.from_files(self.tls.ca_certificate, certificate, key)
        return chain_pb2_grpc.AdminStub(self.channel(identity))


@dataclass
class FakeStore:
    """A store as the control plane sees it: a name, a node key and its certificate."""

    name: str
    key: ec.EllipticCurvePrivateKey
    channel: grpc.Channel

    @property
    def stub(self) -> chain_pb2_grpc.StoreSyncStub:
        return chain_pb2_grpc.StoreSyncStub(self.channel)

    def receipt(self, command: chain_pb2.Command, **fields: object) -> chain_pb2.Receipt:
        body, signature = sign_receipt(
            {"command_id": command.command_id, "store": self.name, **fields}, self.key
        )
        return chain_pb2.Receipt(body=body, signature=signature)

    def erase_receipt(self, command: chain_pb2.Command) -> chain_pb2.Receipt:
        return self.receipt(
            command,
            kind="erase-member",
            request_id=command.erase_member.request_id,
            member_id=command.erase_member.member_id,
            statement=ERASURE_STATEMENT,
            done_at=datetime.now(UTC).isoformat(),
        )


@pytest.fixture
def chain(tmp_path: Path, registry_url: str) -> Iterator[Chain]:
    home = create_coordinator_home(tmp_path / "coordinator", "test chain")
    registry = open_registry(registry_url)
    settings = ControlPlaneSettings(
        host="127.0.0.1",
        port=0,
        heartbeat_seconds=1,
        models_dir=home.models_dir,
        chain="test chain",
        store_cache_seconds=0.0,
    )
    plane = ControlPlane(settings, home.tls, registry)
    plane.start()
    try:
        yield Chain(plane, registry, home.tls, tmp_path)
    finally:
        plane.stop(grace_seconds=0.5)
        registry.close()


def _store(
    chain: Chain, name: str, *, register: bool = True, key_name: str | None = None
) -> FakeStore:
    """A store with its own key; its certificate names ``key_name`` (default: ``name``)."""
    key = ec.generate_private_key(ec.SECP384R1())
    pem = issue_store_certificate(chain.tls, key_name or name, key.public_key())
    if register:
        chain.registry.register_store(
            name,
            key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode("ascii"),
            hashlib.sha256(pem).hexdigest(),
            datetime.now(UTC),
        )
    identity = ClientIdentity(chain.tls.ca_certificate.read_bytes(), pem, private_key_pem(key))
    return FakeStore(name, key, chain.channel(identity))


def _refused(call: object, code: grpc.StatusCode) -> str:
    assert isinstance(call, grpc.RpcError) and isinstance(call, grpc.Call)
    assert call.code() == code, call.details()
    return str(call.details())


def test_a_store_speaks_only_for_itself(chain: Chain) -> None:
    store = _store(chain, "store-a")
    health = chain_pb2.StoreHealth(
        members_enrolled=12, consents_recognition=12, consents_model_improvement=7, key_ok=True
    )
    reply = store.stub.Heartbeat(chain_pb2.HeartbeatRequest(health=health), timeout=5)
    assert reply.heartbeat_interval_seconds == 1 and reply.pending_commands == 0
    chain.plane.heartbeats.flush()
    [listed] = chain.admin().ListStores(chain_pb2.ListStoresRequest(), timeout=5).stores
    assert listed.name == "store-a" and listed.online
    assert (listed.health.members_enrolled, listed.health.consents_model_improvement) == (12, 7)
    assert chain.registry.get_store("store-a").last_health["members_enrolled"] == 12  # type: ignore[union-attr]

    stranger = _store(chain, "store-x", register=False)
    with pytest.raises(grpc.RpcError) as refused:
        stranger.stub.Heartbeat(chain_pb2.HeartbeatRequest(), timeout=5)
    assert "not registered" in _refused(refused.value, grpc.StatusCode.PERMISSION_DENIED)

    # A certificate naming store-a, but for another key than the one the chain registered.
    impostor = _store(chain, "store-b", key_name="store-a")
    with pytest.raises(grpc.RpcError) as refused:
        impostor.stub.Heartbeat(chain_pb2.HeartbeatRequest(), timeout=5)
    assert "another key" in _refused(refused.value, grpc.StatusCode.PERMISSION_DENIED)

    admin_identity = ClientIdentity.from_files(
        chain.tls.ca_certificate, chain.tls.admin_certificate, chain.tls.admin_key
    )
    as_admin = chain_pb2_grpc.StoreSyncStub(chain.channel(admin_identity))
    with pytest.raises(grpc.RpcError) as refused:
        as_admin.PullCommands(chain_pb2.PullCommandsRequest(), timeout=5)
    assert "not a store" in _refused(refused.value, grpc.StatusCode.PERMISSION_DENIED)

    with pytest.raises(grpc.RpcError) as refused:
        chain_pb2_grpc.AdminStub(store.channel).ListStores(chain_pb2.ListStoresRequest(), timeout=5)
    assert "may not read" in _refused(refused.value, grpc.StatusCode.PERMISSION_DENIED)

    chain.registry.revoke_store("store-a", datetime.now(UTC))
    with pytest.raises(grpc.RpcError) as refused:
        store.stub.Heartbeat(chain_pb2.HeartbeatRequest(), timeout=5)
    assert "revoked" in _refused(refused.value, grpc.StatusCode.PERMISSION_DENIED)


def test_no_certificate_no_connection(chain: Chain) -> None:
    credentials = grpc.ssl_channel_credentials(chain.tls.ca_certificate.read_bytes())
    with (
        grpc.secure_channel(chain.address, credentials) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        chain_pb2_grpc.AdminStub(channel).WhoAmI(chain_pb2.WhoAmIRequest(), timeout=5)
    _refused(refused.value, grpc.StatusCode.UNAVAILABLE)


def test_a_viewer_reads_and_cannot_act(chain: Chain) -> None:
    _store(chain, "store-a")
    viewer = chain.viewer()
    me = viewer.WhoAmI(chain_pb2.WhoAmIRequest(), timeout=5)
    assert (me.name, me.role, me.chain) == ("vera", "viewer", "test chain")
    assert len(viewer.ListStores(chain_pb2.ListStoresRequest(), timeout=5).stores) == 1
    acts = [
        (viewer.RequestErasure, chain_pb2.RequestErasureRequest(member_id="M-1")),
        (viewer.Promote, chain_pb2.PromoteRequest(version=1)),
        (viewer.Rollback, chain_pb2.RollbackRequest()),
        (viewer.StartTraining, chain_pb2.StartTrainingRequest(rounds=1)),
    ]
    for method, request in acts:
        with pytest.raises(grpc.RpcError) as refused:
            method(request, timeout=5)
        assert "may only read" in _refused(refused.value, grpc.StatusCode.PERMISSION_DENIED)
    assert chain.registry.list_erasures() == []


def test_erasure_is_complete_when_every_store_sent_a_verified_receipt(chain: Chain) -> None:
    stores = [_store(chain, name) for name in ("store-a", "store-b")]
    admin = chain.admin()
    with pytest.raises(grpc.RpcError) as refused:
        admin.RequestErasure(chain_pb2.RequestErasureRequest(member_id=" M-1"), timeout=5)
    assert "blanks" in _refused(refused.value, grpc.StatusCode.INVALID_ARGUMENT)

    erasure = admin.RequestErasure(chain_pb2.RequestErasureRequest(member_id="M-1"), timeout=5)
    assert {s.store: s.state for s in erasure.stores} == {
        "store-a": "pending",
        "store-b": "pending",
    }
    assert erasure.requested_by == "admin:admin" and not erasure.complete

    first, second = stores
    beat = first.stub.Heartbeat(chain_pb2.HeartbeatRequest(), timeout=5)
    assert beat.pending_commands == 1
    [command] = first.stub.PullCommands(chain_pb2.PullCommandsRequest(), timeout=5).commands
    assert command.erase_member.member_id == "M-1"
    assert command.erase_member.request_id == erasure.request_id

    # Signed by another key: refused, and the command stays pending.
    forged = FakeStore(first.name, ec.generate_private_key(ec.SECP384R1()), first.channel)
    with pytest.raises(grpc.RpcError) as refused:
        first.stub.Acknowledge(
            chain_pb2.AcknowledgeRequest(
                command_id=command.command_id, receipt=forged.erase_receipt(command)
            ),
            timeout=5,
        )
    assert "does not verify" in _refused(refused.value, grpc.StatusCode.INVALID_ARGUMENT)
    # Another store cannot answer store-a's command.
    with pytest.raises(grpc.RpcError) as refused:
        second.stub.Acknowledge(
            chain_pb2.AcknowledgeRequest(
                command_id=command.command_id, receipt=second.erase_receipt(command)
            ),
            timeout=5,
        )
    _refused(refused.value, grpc.StatusCode.NOT_FOUND)

    ack = chain_pb2.AcknowledgeRequest(
        command_id=command.command_id, receipt=first.erase_receipt(command)
    )
    assert first.stub.Acknowledge(ack, timeout=5).accepted
    assert not first.stub.Acknowledge(ack, timeout=5).accepted  # the first receipt stands
    halfway = admin.GetErasure(chain_pb2.GetErasureRequest(request_id=erasure.request_id))
    assert not halfway.complete

    [command] = second.stub.PullCommands(chain_pb2.PullCommandsRequest(), timeout=5).commands
    second.stub.Acknowledge(
        chain_pb2.AcknowledgeRequest(
            command_id=command.command_id, receipt=second.erase_receipt(command)
        ),
        timeout=5,
    )
    done = admin.GetErasure(chain_pb2.GetErasureRequest(request_id=erasure.request_id))
    assert done.complete
    assert all(s.state == "erased" and s.receipt_verified for s in done.stores)
    assert all(ERASURE_STATEMENT in s.receipt_json for s in done.stores)
    actions = [r.action for r in admin.ReadAudit(chain_pb2.ReadAuditRequest(), timeout=5).records]
    assert "erasure-requested" in actions and "erasure-completed" in actions


def _version(chain: Chain, scale: float, *, signed: bool = True) -> int:
    state = {"layer.weight": torch.full((4, 4), scale), "layer.bias": torch.zeros(4)}
    key = load_model_signing_key(chain.tls) if signed else None
    saved = save_model_version(
        chain.plane.settings.models_dir, state, {}, {1: {"loss": 0.5}}, signing_key=key
    )
    chain.plane.import_models()
    return saved.version


def test_only_signed_intact_versions_roll_out(chain: Chain) -> None:
    store = _store(chain, "store-a")
    admin = chain.admin()
    first, second = _version(chain, 1.0), _version(chain, 2.0)
    unsigned = _version(chain, 3.0, signed=False)

    rollout = admin.Promote(chain_pb2.PromoteRequest(version=first), timeout=5)
    assert (rollout.version, rollout.previous_version, rollout.stores_commanded) == (first, 0, 1)
    [command] = store.stub.PullCommands(chain_pb2.PullCommandsRequest(), timeout=5).commands
    adopt = command.adopt_model
    assert adopt.version == first and '"signature"' in adopt.manifest_json
    chunks = list(store.stub.FetchModel(chain_pb2.FetchModelRequest(version=first), timeout=10))
    weights = b"".join(chunk.data for chunk in chunks)
    assert len(weights) == adopt.size_bytes == chunks[0].total_bytes
    assert hashlib.sha256(weights).hexdigest() == adopt.sha256
    store.stub.Acknowledge(
        chain_pb2.AcknowledgeRequest(
            command_id=command.command_id,
            receipt=store.receipt(command, kind="adopt-model", version=first, outcome="adopted"),
        ),
        timeout=5,
    )

    with pytest.raises(grpc.RpcError) as refused:
        admin.Promote(chain_pb2.PromoteRequest(version=unsigned), timeout=5)
    assert "not signed" in _refused(refused.value, grpc.StatusCode.FAILED_PRECONDITION)
    weights_file = chain.plane.settings.models_dir / f"model-v{second:04d}.pt"
    weights_file.write_bytes(weights_file.read_bytes() + b"tampered")
    with pytest.raises(grpc.RpcError) as refused:
        admin.Promote(chain_pb2.PromoteRequest(version=second), timeout=5)
    assert "no longer matches" in _refused(refused.value, grpc.StatusCode.FAILED_PRECONDITION)
    with pytest.raises(grpc.RpcError) as refused:
        admin.Promote(chain_pb2.PromoteRequest(version=99), timeout=5)
    _refused(refused.value, grpc.StatusCode.NOT_FOUND)

    rollout = admin.Rollback(chain_pb2.RollbackRequest(), timeout=5)
    assert (rollout.version, rollout.previous_version) == (0, first)
    [command] = store.stub.PullCommands(chain_pb2.PullCommandsRequest(), timeout=5).commands
    assert command.adopt_model.version == 0 and command.adopt_model.manifest_json == ""
    # A store's refusal is kept and audited.
    store.stub.Acknowledge(
        chain_pb2.AcknowledgeRequest(
            command_id=command.command_id,
            receipt=store.receipt(
                command, kind="adopt-model", version=0, outcome="refused", reason="disk full"
            ),
        ),
        timeout=5,
    )
    refusals = admin.ReadAudit(chain_pb2.ReadAuditRequest(action="model-refused"), timeout=5)
    assert [r.actor for r in refusals.records] == ["store:store-a"]
    models = admin.ListModels(chain_pb2.ListModelsRequest(), timeout=5)
    assert models.promoted_version == 0
    assert [m.signature_verified for m in models.models] == [True, True, False]


def test_events_stream_live_and_resume(chain: Chain) -> None:
    _store(chain, "store-a")
    admin = chain.admin()
    stream = admin.WatchEvents(chain_pb2.WatchEventsRequest(), timeout=20)
    time.sleep(0.3)  # the stream starts from the newest record when it opens
    erasure = admin.RequestErasure(chain_pb2.RequestErasureRequest(member_id="M-7"), timeout=5)
    event = next(stream)
    assert (
        event.kind == "erasure-requested"
        and erasure.request_id in event.subject + event.details_json
    )
    stream.cancel()
    replay = admin.WatchEvents(
        chain_pb2.WatchEventsRequest(after_event_id=event.event_id - 1), timeout=20
    )
    assert next(replay).event_id == event.event_id
    replay.cancel()


def test_a_training_request_with_bad_settings_is_refused_before_any_run(
    chain: Chain, tmp_path: Path
) -> None:
    federation = LocalFederation(tmp_path / "flower", insecure=True)  # never started
    training = FederatedTraining(
        federation, tmp_path, chain.registry, lambda run_id: [], lambda: datetime.now(UTC)
    )
    chain.plane.admin.attach_training(training)
    admin = chain.admin()
    bad = [
        chain_pb2.StartTrainingRequest(rounds=1, strategy="fedsgd"),
        chain_pb2.StartTrainingRequest(rounds=101),
        chain_pb2.StartTrainingRequest(rounds=1, release_mix=1.5),
    ]
    for request in bad:
        with pytest.raises(grpc.RpcError) as refused:
            admin.StartTraining(request, timeout=5)
        _refused(refused.value, grpc.StatusCode.INVALID_ARGUMENT)
    assert chain.registry.list_runs() == []

    # Good settings reach the SuperLink, which is down here: the run is recorded as failed.
    good = chain_pb2.StartTrainingRequest(
        rounds=2,
        strategy="fedprox",
        local_epochs=2,
        learning_rate=0.01,
        min_stores=3,
        release_mix=0.7,
    )
    assert run_settings(good) == {
        "strategy": "fedprox",
        "local-epochs": 2,
        "learning-rate": 0.01,
        "min-stores": 3,
        "release-mix": 0.7,
    }
    with pytest.raises(grpc.RpcError) as refused:
        admin.StartTraining(good, timeout=5)
    assert "SuperLink" in _refused(refused.value, grpc.StatusCode.FAILED_PRECONDITION)
    [run] = chain.registry.list_runs()
    assert (run.status, run.rounds_planned) == ("failed", 2)


def test_a_version_keeps_its_run_whichever_import_finds_it_first(chain: Chain) -> None:
    run = chain.registry.start_run(1, datetime.now(UTC), actor="admin:admin")
    state = {"layer.weight": torch.ones(2, 2)}
    models = chain.plane.settings.models_dir
    ours = save_model_version(models, state, {"registry-run-id": run.run_id}, {1: {"loss": 0.5}})
    stranger = save_model_version(models, state, {"registry-run-id": 999}, {1: {"loss": 0.5}})
    plain = save_model_version(models, state, {}, {1: {"loss": 0.5}})
    # The periodic scan, which knows no run, gets there before the run's own import.
    assert chain.plane.import_models() == [ours.version, stranger.version, plain.version]
    runs = {m.version: m.run_id for m in chain.registry.list_model_versions()}
    assert runs == {ours.version: run.run_id, stranger.version: None, plain.version: None}
