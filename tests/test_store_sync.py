"""A store in step with its chain's control plane: joining, commands, receipts, heartbeats.

Real throughout: the chain's CA, server certificate and model-signing key
(``coordinator.pki``), a store certificate issued for the store's real node key, gRPC with
mutual TLS on 127.0.0.1 (``fake_control_plane``), SQLite galleries with LFW members enrolled
from their photos, signed model versions written by ``save_model_version``, receipts verified
with the store's public key, and ``loyalnet store serve`` as a real process.

The enrolled store and the chain with two signed model versions are ``test_model_check``'s
module fixtures, run again here.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import test_model_check
from cryptography.hazmat.primitives.asymmetric import ec
from fake_control_plane import (
    ControlPlaneServer,
    FakeStoreSync,
    admit_store,
    issue_certificate,
    store_public_key,
)

from coordinator.pki import create_coordinator_tls, issue_store_certificate
from coordinator.processes import free_port
from loyalnet import __version__
from loyalnet.chain.v1 import chain_pb2
from loyalnet.errors import LoyalnetError
from loyalnet.receipts import ERASURE_STATEMENT
from store_node.config import StoreConfig, StorePaths, read_config, write_config
from store_node.face.weights import MOBILEFACENET_VERSION
from store_node.gallery import Gallery, Purpose
from store_node.gallery.records import AuditAction
from store_node.joining import join_federation
from store_node.model_check import read_model_file
from store_node.retemplate import recognition_version
from store_node.serve import serve_store
from store_node.sync import (
    AgentSettings,
    ConnectionState,
    Outbox,
    OutboxError,
    SyncAgent,
    VisitCounts,
    VisitSource,
    control_plane_of,
)
from store_node.sync.commands import DOWNLOAD_PREFIX
from store_node.training import fine_tuned_version

# Module fixtures of test_model_check, found by pytest under these names (and run again here):
# the pretrained weights, the chain (CA, model-signing key, two signed model versions) and
# the store with two LFW members enrolled with both consents.
pretrained = test_model_check.pretrained
chain = test_model_check.chain
enrolled = test_model_check.enrolled
Chain = test_model_check.Chain
MEMBERS = test_model_check.MEMBERS

STORE_ID = "store-model-check"  # the enrolled store's name
FAST = AgentSettings(
    call_timeout=5.0,
    backoff_initial=0.05,
    backoff_max=0.2,
    refused_retry=0.3,
    calibration_people=10,
)
ERASURE_KEYS = {
    "receipt_version",
    "kind",
    "command_id",
    "request_id",
    "member_id",
    "store",
    "statement",
    "done_at",
}


@dataclass
class Site:
    """A joined store and its chain's control plane, running."""

    store: StorePaths
    servicer: FakeStoreSync
    server: ControlPlaneServer

    def agent(self, settings: AgentSettings = FAST, visits: VisitSource | None = None) -> SyncAgent:
        return SyncAgent(self.store, control_plane_of(self.store), settings, visits=visits)

    def run_once(self, settings: AgentSettings = FAST) -> tuple[int, int, int]:
        """One cycle of a fresh agent: (commands done, waiting, receipts delivered)."""
        agent = self.agent(settings)
        try:
            report = agent.run_once()
        finally:
            agent.close()
        return report.commands_done, report.commands_waiting, report.receipts_delivered


@pytest.fixture
def site(enrolled: Path, chain: Chain, tmp_path: Path) -> Iterator[Site]:
    root = tmp_path / "store"
    shutil.copytree(enrolled, root)
    port = free_port()
    join_federation(StorePaths(root), chain.tls.ca_certificate, "127.0.0.1:9092")
    servicer = FakeStoreSync(STORE_ID, store_public_key(root))
    server = ControlPlaneServer(chain.tls, servicer, port)
    admit_store(chain.tls, root, server.address, tmp_path)
    server.start()
    try:
        yield Site(StorePaths(root), servicer, server)
    finally:
        server.stop()


def _gallery_members(store: StorePaths) -> list[str]:
    with Gallery.open(store.database, store.key) as gallery:
        return [m.member_id for m in gallery.members()]


def _audit(store: StorePaths) -> list[AuditAction]:
    with Gallery.open(store.database, store.key) as gallery:
        return [entry.action for entry in gallery.audit_log()]


def _wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.05)


# -- joining the control plane ----------------------------------------------------------------


def _fresh_store(folder: Path, name: str = "shop-7") -> StorePaths:
    paths = StorePaths(folder)
    folder.mkdir()
    write_config(paths, StoreConfig(store_id=name))
    return paths


def test_join_keeps_the_certificate_the_chain_issued_for_this_store(
    chain: Chain, tmp_path: Path
) -> None:
    paths = _fresh_store(tmp_path / "shop")
    ca = chain.tls.ca_certificate
    first = join_federation(paths, ca, "127.0.0.1:9092")
    assert first.control_plane == "" and first.control_plane_certificate is None
    assert "control_plane" not in paths.config.read_text()  # older loyalnets still read it
    certificate = issue_certificate(chain.tls, paths.root, tmp_path)

    joined = join_federation(
        paths, ca, "127.0.0.1:9092", control_plane="hq.acme.test:7443", certificate_file=certificate
    )
    assert joined.new_certificate and joined.control_plane_certificate == (
        paths.control_plane_certificate
    )
    assert paths.control_plane_certificate.read_bytes() == certificate.read_bytes()
    assert read_config(paths).control_plane == "hq.acme.test:7443"
    plane = control_plane_of(paths)
    assert (plane.address, plane.store_id, plane.identity.peer.name) == (
        "hq.acme.test:7443",
        "shop-7",
        "shop-7",
    )

    # Joining again without a certificate (or address) keeps both.
    again = join_federation(paths, ca, "127.0.0.1:9093")
    assert not again.new_certificate and again.control_plane == "hq.acme.test:7443"
    assert paths.control_plane_certificate.read_bytes() == certificate.read_bytes()

    # A new chain's CA that did not issue the held certificate: refused, nothing changes.
    other = create_coordinator_tls(tmp_path / "other-chain", "other")
    before = {p.name: p.read_bytes() for p in paths.root.iterdir() if p.is_file()}
    with pytest.raises(LoyalnetError, match=r"not issued by the chain's CA.*--certificate"):
        join_federation(paths, other.ca_certificate, "127.0.0.1:9093")
    assert {p.name: p.read_bytes() for p in paths.root.iterdir() if p.is_file()} == before
    with pytest.raises(LoyalnetError, match="--control-plane 'hq' is not HOST:PORT"):
        join_federation(paths, ca, "127.0.0.1:9093", control_plane="hq")


def test_join_refuses_a_certificate_that_is_not_this_stores(chain: Chain, tmp_path: Path) -> None:
    paths = _fresh_store(tmp_path / "shop")
    ca = chain.tls.ca_certificate
    # Before the store has a node key, no certificate can be for it.
    stray = tmp_path / "stray.crt"
    stray.write_bytes(
        issue_store_certificate(
            chain.tls, "shop-7", ec.generate_private_key(ec.SECP384R1()).public_key()
        )
    )
    with pytest.raises(LoyalnetError, match=r"no node key yet.*join first without --certificate"):
        join_federation(paths, ca, "127.0.0.1:9092", certificate_file=stray)
    assert not (paths.root / "node_key").exists() and not paths.ca_certificate.exists()

    join_federation(paths, ca, "127.0.0.1:9092")
    key = store_public_key(paths.root)
    other_chain = create_coordinator_tls(tmp_path / "other-chain", "other")
    cases = {
        "wrong-key.crt": (stray.read_bytes(), "issued for another key than this store's node_key"),
        "wrong-ca.crt": (
            issue_store_certificate(other_chain, "shop-7", key),
            "not issued by the chain's CA",
        ),
        "wrong-name.crt": (
            issue_store_certificate(chain.tls, "shop-8", key),
            "names the store 'shop-8', but this store is 'shop-7'",
        ),
        "admin.crt": (
            chain.tls.admin_certificate.read_bytes(),
            "issued for another key",
        ),
        "not-pem.crt": (b"hello", "not a PEM certificate"),
    }
    before = {p.name: p.read_bytes() for p in paths.root.iterdir() if p.is_file()}
    for name, (data, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(LoyalnetError, match=message) as refused:
            join_federation(
                paths, ca, "127.0.0.1:9092", control_plane="127.0.0.1:7443", certificate_file=path
            )
        assert "register" in str(refused.value)  # says what to do
        assert {p.name: p.read_bytes() for p in paths.root.iterdir() if p.is_file()} == before
    with pytest.raises(LoyalnetError, match="cannot read the certificate"):
        join_federation(paths, ca, "127.0.0.1:9092", certificate_file=tmp_path / "missing.crt")


# -- erasures -----------------------------------------------------------------------------------


def test_an_erasure_forgets_the_member_and_answers_with_a_verified_receipt(site: Site) -> None:
    command = site.servicer.erase("Colin_Powell")
    assert site.run_once() == (1, 0, 1)

    fields = site.servicer.fields_of(command)  # verified with the store's registered key
    assert set(fields) == ERASURE_KEYS
    assert fields["kind"] == "erase-member"
    assert fields["member_id"] == "Colin_Powell" and fields["store"] == STORE_ID
    assert fields["statement"] == ERASURE_STATEMENT
    assert fields["request_id"] == site.servicer.sent[command].erase_member.request_id
    done_at = dt.datetime.fromisoformat(str(fields["done_at"]))
    assert abs(dt.datetime.now(dt.UTC) - done_at) < dt.timedelta(minutes=1)
    assert _gallery_members(site.store) == ["Tony_Blair"]
    with Gallery.open(site.store.database, site.store.key) as gallery:
        assert gallery.was_erased("Colin_Powell")
    assert site.servicer.commands == []
    # The last heartbeat already counts one member fewer.
    assert site.servicer.heartbeats[-1].members_enrolled == 1


def test_an_erasure_of_a_stranger_gets_the_same_receipt(site: Site) -> None:
    real = site.servicer.erase("Tony_Blair")
    stranger = site.servicer.erase("never-enrolled-42")
    impossible = site.servicer.erase(" x" * 100)  # no gallery could ever hold this id
    audit_before = _audit(site.store)
    assert site.run_once() == (3, 0, 3)

    receipts = [site.servicer.fields_of(c) for c in (real, stranger, impossible)]
    assert all(set(r) == ERASURE_KEYS for r in receipts)
    assert {r["statement"] for r in receipts} == {ERASURE_STATEMENT}
    assert {r["kind"] for r in receipts} == {"erase-member"}
    assert [r["member_id"] for r in receipts] == ["Tony_Blair", "never-enrolled-42", " x" * 100]
    # Only the real erasure touched the gallery.
    assert _audit(site.store) == [*audit_before, AuditAction.ERASE]
    assert _gallery_members(site.store) == ["Colin_Powell"]


def test_an_erasure_is_signed_only_once_the_gallery_files_are_wiped(site: Site) -> None:
    command = site.servicer.erase("Colin_Powell")
    reader = sqlite3.connect(site.store.database)  # another program reading an old snapshot
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM members").fetchone()
        assert site.run_once() == (0, 1, 0)  # erased, but the wipe waits: no receipt yet
        assert site.servicer.acknowledgements == []
        assert "Colin_Powell" not in _gallery_members(site.store)
    finally:
        reader.close()
    assert site.run_once() == (1, 0, 1)  # the retry wipes, then signs
    assert site.servicer.fields_of(command)["statement"] == ERASURE_STATEMENT
    assert b"Colin_Powell" not in site.store.database.read_bytes()


@pytest.mark.slow
def test_an_erasure_waits_while_another_program_writes(site: Site) -> None:
    command = site.servicer.erase("Colin_Powell")
    writer = sqlite3.connect(site.store.database, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        assert site.run_once() == (0, 1, 0)  # busy: nothing erased, nothing signed
        assert "Colin_Powell" in _gallery_members(site.store)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert site.run_once() == (1, 0, 1)
    assert site.servicer.fields_of(command)["member_id"] == "Colin_Powell"


def test_receipts_survive_a_restart_and_a_done_command_is_not_redone(site: Site) -> None:
    command = site.servicer.erase("Tony_Blair")
    site.servicer.lose_acknowledgements = 1  # the coordinator goes down mid-acknowledgement
    agent = site.agent()
    with pytest.raises(grpc.RpcError):
        agent.run_once()
    assert agent.outbox.pending() == 1
    stored = agent.outbox.record(command)
    assert stored is not None and stored.receipt is not None
    with pytest.raises(OutboxError, match="another process uses"):
        Outbox.open(site.store.root)  # one serve per store
    agent.close()
    assert _gallery_members(site.store) == ["Colin_Powell"]

    site.server.stop()  # the coordinator stays away across the store's restart
    restarted = site.agent()
    with pytest.raises(grpc.RpcError) as unreachable:
        restarted.run_once()
    assert unreachable.value.code() is grpc.StatusCode.UNAVAILABLE
    restarted.close()

    site.server.start()
    erasures = _audit(site.store).count(AuditAction.ERASE)
    assert site.run_once() == (0, 0, 1)  # delivered from the outbox; nothing carried out
    first = site.servicer.acknowledgements[-1]
    assert (first.command_id, first.body, first.signature) == (
        command,
        stored.receipt.body,
        stored.receipt.signature,
    )
    assert first.accepted and site.servicer.commands == []

    # The coordinator sends the command again: its receipt was delivered (and dropped here, as
    # it names the member), so nothing is redone and nothing more is sent.
    site.servicer.requeue(command)
    acknowledged = len(site.servicer.acknowledgements)
    site.run_once()
    assert len(site.servicer.acknowledgements) == acknowledged
    assert _audit(site.store).count(AuditAction.ERASE) == erasures == 1
    with Outbox.open(site.store.root) as outbox:
        assert outbox.pending() == 0


# -- heartbeats ---------------------------------------------------------------------------------


def test_heartbeats_carry_the_stores_numbers_and_nothing_else(site: Site) -> None:
    with Gallery.open(site.store.database, site.store.key) as gallery:
        gallery.withdraw("Tony_Blair", Purpose.MODEL_IMPROVEMENT)
    site.run_once()
    health = site.servicer.heartbeats[-1]
    assert health.members_enrolled == 2
    assert health.consents_recognition == 2
    assert health.consents_model_improvement == 1
    assert not health.has_visits and health.member_visits_today == 0
    assert (health.model_version, health.model_sha256) == (0, "")
    assert health.key_ok and health.gallery_ok
    assert 0 < health.disk_free_bytes <= shutil.disk_usage(site.store.root).total
    assert health.software_version == __version__
    assert health.outbox_pending == 0
    # Only StoreHealth's own fields, and no member's id or name anywhere in the bytes sent.
    sent = site.servicer.heartbeat_bytes[-1]
    assert chain_pb2.HeartbeatRequest.FromString(sent).health == health
    for member in MEMBERS:
        assert member.encode() not in sent and member.split("_")[0].encode() not in sent

    # The cameras' hook: visits appear once a visit source is given.
    class Cameras:
        def visits_today(self) -> VisitCounts:
            return VisitCounts(member_visits=3, unknown_visits=11)

    agent = site.agent(visits=Cameras())
    try:
        agent.run_once()
    finally:
        agent.close()
    counted = site.servicer.heartbeats[-1]
    assert counted.has_visits
    assert (counted.member_visits_today, counted.unknown_visits_today) == (3, 11)


# -- model adoption -----------------------------------------------------------------------------


def _adopt_command(servicer: FakeStoreSync, chain: Chain, data: bytes | None = None) -> str:
    """Offer chain model version a (optionally with other bytes on the wire)."""
    real = chain.a.path.read_bytes()
    servicer.models[chain.a.version] = real if data is None else data
    return servicer.adopt(
        chain.a.version,
        sha256=chain.a.sha256,
        size=len(real),
        manifest_json=chain.a.manifest_path.read_text(encoding="utf-8"),
    )


def test_a_tampered_model_is_refused_and_changes_nothing(site: Site, chain: Chain) -> None:
    real = chain.a.path.read_bytes()
    tampered = real[:-100] + bytes(b ^ 0xFF for b in real[-100:])
    command = _adopt_command(site.servicer, chain, tampered)
    assert site.run_once() == (1, 0, 1)

    fields = site.servicer.fields_of(command)
    assert set(fields) == {
        "receipt_version",
        "kind",
        "command_id",
        "store",
        "version",
        "outcome",
        "reason",
        "done_at",
    }
    assert (fields["kind"], fields["outcome"], fields["version"]) == (
        "adopt-model",
        "refused",
        chain.a.version,
    )
    assert "sha256" in str(fields["reason"])
    assert str(site.store.root) not in str(fields["reason"])
    assert recognition_version(site.store.root) == MOBILEFACENET_VERSION
    assert AuditAction.MODEL_REFUSED in _audit(site.store)
    assert not list(site.store.root.glob(f"{DOWNLOAD_PREFIX}*"))
    assert not (site.store.root / "models").exists()
    assert site.servicer.heartbeats[-1].model_version == 0


def test_a_signed_model_is_adopted_calibrated_and_reported(site: Site, chain: Chain) -> None:
    command = _adopt_command(site.servicer, chain)
    assert site.run_once() == (1, 0, 1)

    fields = site.servicer.fields_of(command)
    assert (fields["outcome"], fields["reason"], fields["version"]) == (
        "adopted",
        "",
        chain.a.version,
    )
    received = read_model_file(chain.a.path)
    name = fine_tuned_version(received.state)
    assert recognition_version(site.store.root) == name
    with Gallery.open(site.store.database, site.store.key) as gallery:
        calibration = gallery.calibration()
        assert calibration is not None and calibration[0].model_version == name
        assert all(name in m.model_versions for m in gallery.members())
    assert not list(site.store.root.glob(f"{DOWNLOAD_PREFIX}*"))
    health = site.servicer.heartbeats[-1]  # the heartbeat after the command
    assert health.model_version == chain.a.version
    assert health.model_sha256 == received.manifest["state_sha256"]

    # Rollback: version 0 is the pretrained model, from the store's own pinned weights.
    back = site.servicer.adopt(0)
    assert site.run_once() == (1, 0, 1)
    assert site.servicer.fields_of(back)["outcome"] == "adopted"
    assert recognition_version(site.store.root) == MOBILEFACENET_VERSION
    assert (
        site.servicer.heartbeats[-1].model_version,
        site.servicer.heartbeats[-1].model_sha256,
    ) == (
        0,
        "",
    )


# -- the agent in its thread ------------------------------------------------------------------


def test_the_agent_backs_off_while_unreachable_and_stops_promptly(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    site.server.stop()
    caplog.set_level(logging.INFO, logger="loyalnet.store.sync")
    agent = site.agent()
    agent.start()
    try:
        _wait_for(lambda: agent.state is ConnectionState.UNREACHABLE, 10, "unreachable")
        time.sleep(0.6)  # several back-off retries
        command = site.servicer.erase("Colin_Powell")
        site.server.start()
        _wait_for(lambda: agent.state is ConnectionState.ONLINE, 15, "back online")
        _wait_for(lambda: bool(site.servicer.acknowledgements), 10, "the erasure's receipt")
        assert site.servicer.fields_of(command)["member_id"] == "Colin_Powell"
    finally:
        started = time.monotonic()
        assert agent.stop(timeout=10)
        stopped_in = time.monotonic() - started
    assert stopped_in < 2.0  # wakes from its wait at once
    assert not agent.running()
    lines = [r.getMessage() for r in caplog.records if r.name == "loyalnet.store.sync"]
    assert sum("unreachable" in line for line in lines) == 1, lines
    assert sum("back online" in line for line in lines) == 1, lines
    assert any(f"erasure command {command} done" in line for line in lines)
    assert not any("Colin" in line for line in lines)


def test_a_refused_store_hears_why_and_retries_slowly(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    site.servicer.refusal = (grpc.StatusCode.PERMISSION_DENIED, "store store-model-check revoked")
    caplog.set_level(logging.INFO, logger="loyalnet.store.sync")
    agent = site.agent()
    agent.start()
    try:
        _wait_for(lambda: agent.state is ConnectionState.REFUSED, 10, "refused")
        time.sleep(1.0)  # about three tries, 0.3 s apart
        assert agent.running()
        site.servicer.refusal = None
        _wait_for(lambda: agent.state is ConnectionState.ONLINE, 10, "admitted again")
    finally:
        assert agent.stop(timeout=10)
    lines = [r.getMessage() for r in caplog.records if r.name == "loyalnet.store.sync"]
    refused = [line for line in lines if "refused store" in line]
    assert len(refused) == 1 and "PERMISSION_DENIED: store store-model-check revoked" in refused[0]


# -- loyalnet store serve -----------------------------------------------------------------------


def test_serve_needs_a_store_joined_to_the_control_plane(chain: Chain, tmp_path: Path) -> None:
    paths = _fresh_store(tmp_path / "shop")
    with pytest.raises(LoyalnetError, match=r"no control plane address.*--control-plane"):
        serve_store(paths.root)
    join_federation(paths, chain.tls.ca_certificate, "127.0.0.1:9092", control_plane="h:1")
    with pytest.raises(LoyalnetError, match=r"no control-plane\.crt.*--certificate FILE"):
        serve_store(paths.root)


def test_serve_once_reports_an_unreachable_coordinator(site: Site) -> None:
    assert serve_store(site.store.root, once=True, settings=FAST) == 0
    assert site.servicer.heartbeats
    site.server.stop()
    with pytest.raises(LoyalnetError, match="did not answer \\(UNAVAILABLE"):
        serve_store(site.store.root, once=True, settings=FAST)


def test_store_serve_runs_erases_and_stops_on_sigterm(
    enrolled: Path, chain: Chain, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    shutil.copytree(enrolled, root)
    join_federation(StorePaths(root), chain.tls.ca_certificate, "127.0.0.1:9092")
    certificate = issue_certificate(chain.tls, root, tmp_path)
    servicer = FakeStoreSync(STORE_ID, store_public_key(root))
    env = {k: v for k, v in os.environ.items() if k != "LOYALNET_STORE"}
    with ControlPlaneServer(chain.tls, servicer) as server:
        joined = subprocess.run(
            [
                sys.executable,
                "-m",
                "loyalnet_cli",
                "store",
                "join",
                "--store",
                str(root),
                "--ca",
                str(chain.tls.ca_certificate),
                "--superlink",
                "127.0.0.1:9092",
                "--control-plane",
                server.address,
                "--certificate",
                str(certificate),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert joined.returncode == 0, joined.stderr
        assert "control-plane certificate" in joined.stdout and "installed" in joined.stdout
        command = servicer.erase("Colin_Powell")
        process = subprocess.Popen(
            [sys.executable, "-m", "loyalnet_cli", "store", "serve", "--store", str(root)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            _wait_for(lambda: bool(servicer.acknowledgements), 60, "the erasure's receipt")
            beats = len(servicer.heartbeats)
            _wait_for(lambda: len(servicer.heartbeats) > beats, 10, "a later heartbeat")
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    assert process.returncode == 0, stderr
    assert servicer.fields_of(command)["member_id"] == "Colin_Powell"
    assert _gallery_members(StorePaths(root)) == ["Tony_Blair"]
    assert servicer.heartbeats[-1].members_enrolled == 1
    assert f"erasure command {command} done" in stderr
    assert "SIGTERM received" in stderr and "stopped" in stderr
    assert "Colin" not in stderr and "Traceback" not in stderr
    with Outbox.open(root) as outbox:  # released, and consistent
        assert outbox.pending() == 0


def test_the_outbox_keeps_receipts_across_reopening(tmp_path: Path) -> None:
    with Outbox.open(tmp_path) as outbox:
        record = outbox.begin_attempt("cmd-1", "erase-member")
        assert (record.state, record.attempts, record.receipt) == ("received", 1, None)
        assert outbox.begin_attempt("cmd-1", "erase-member").attempts == 2
        body = b'{"member_id":"Member-0042-unique"}'
        outbox.complete("cmd-1", body, b"sig", model_version=3, calibration_due="m-1")
        with pytest.raises(OutboxError, match="first receipt stands"):
            outbox.complete("cmd-1", b"{}", b"other")
    assert (tmp_path / "sync.db").stat().st_mode & 0o777 == 0o600
    with Outbox.open(tmp_path) as outbox:
        assert outbox.pending() == 1 and outbox.model_version() == 3
        assert [r.signature for r in outbox.undelivered()] == [b"sig"]
        done = outbox.begin_attempt("cmd-1", "erase-member")
        assert done.state == "done" and done.attempts == 2  # done: not counted again
        outbox.mark_delivered("cmd-1")
        assert outbox.pending() == 0 and outbox.undelivered() == []
        assert outbox.record("cmd-1").state == "delivered"  # type: ignore[union-attr]
        # The coordinator holds the receipt now; no file of the store keeps the member id.
        for path in tmp_path.iterdir():
            assert b"Member-0042-unique" not in path.read_bytes(), path.name
        assert outbox.calibration_due() == "m-1"
        outbox.calibration_done("m-0")  # an older model's: the due one stays
        assert outbox.calibration_due() == "m-1"
        outbox.calibration_done("m-1")
        assert outbox.calibration_due() is None
