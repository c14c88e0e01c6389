"""The coordinator's registry on SQLite and PostgreSQL: every test runs on both databases.

The PostgreSQL half needs the server `bash scripts/postgres.sh` starts (or
LOYALNET_TEST_POSTGRES=skip); see tests/registry_databases.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, insert, text

from coordinator.errors import CoordinatorError
from coordinator.registry import (
    ERASED,
    REFUSED,
    Heartbeat,
    HeartbeatResult,
    Registry,
    RegistryConflictError,
    RegistryError,
    RegistryNotFoundError,
    RegistrySchemaError,
    RegistryUnavailableError,
    RegistryValueError,
    Rollout,
    WrongStoreError,
    default_database_url,
    open_registry,
)
from coordinator.registry.schema import Base, StoreRow

T0 = datetime(2025, 3, 1, 9, 0, 0, 123456, tzinfo=UTC)
ADMIN = "admin:alice"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def pem(n: int) -> str:
    # The registry keeps the key as text; receipts are verified by the servicer, not here.
    return f"-----BEGIN PUBLIC KEY-----\nkey{n}\n-----END PUBLIC KEY-----\n"


def sha(n: int) -> str:
    return f"{n:064x}"


@pytest.fixture
def registry(registry_url: str) -> Iterator[Registry]:
    with open_registry(registry_url) as opened:
        yield opened


def register(registry: Registry, *names: str) -> None:
    for n, name in enumerate(names):
        registry.register_store(name, pem(n), sha(n), T0)


def add_version(registry: Registry, version: int, manifest: str = "{}") -> None:
    registry.add_model_version(
        version,
        sha(1000 + version),
        4_078_592,
        f"model-v{version:04d}.pt",
        manifest,
        True,
        "chain-2025",
        at(version),
    )


def actions(registry: Registry) -> list[str]:
    """Audit actions, oldest first."""
    return [record.action for record in reversed(registry.read_audit(limit=1000))]


# -- stores ------------------------------------------------------------------------------------


def test_register_revoke_and_register_again(registry: Registry) -> None:
    first = registry.register_store("store-a", pem(1), sha(1), T0)
    assert (first.name, first.public_key_pem, first.certificate_sha256) == (
        "store-a",
        pem(1),
        sha(1),
    )
    assert first.registered_at == T0 and first.registered_at.tzinfo == UTC
    assert (first.revoked, first.last_seen, first.last_health, first.model_version) == (
        False,
        None,
        None,
        None,
    )
    # The same key and certificate again: a safe retry that changes and audits nothing.
    assert registry.register_store("store-a", pem(1), sha(1), at(5)) == first

    revoked = registry.revoke_store("store-a", at(10), actor=ADMIN)
    assert revoked.revoked and revoked.revoked_at == at(10)
    assert registry.revoke_store("store-a", at(20)).revoked_at == at(10)
    with pytest.raises(RegistryConflictError, match="new key"):
        registry.register_store("store-a", pem(1), sha(2), at(30))

    again = registry.register_store("store-a", pem(2), sha(2), at(40), actor=ADMIN)
    assert (again.public_key_pem, again.certificate_sha256, again.revoked) == (
        pem(2),
        sha(2),
        False,
    )
    assert again.registered_at == T0
    assert registry.get_store("store-a") == again
    assert registry.get_store("nowhere") is None
    with pytest.raises(RegistryNotFoundError):
        registry.revoke_store("nowhere", T0)

    registry.register_store("store-0", pem(3), sha(3), T0)
    assert [store.name for store in registry.list_stores()] == ["store-0", "store-a"]
    assert actions(registry) == [
        "store-registered",
        "store-revoked",
        "store-key-replaced",
        "store-registered",
    ]
    replaced = registry.read_audit(action="store-key-replaced")[0]
    assert (replaced.actor, replaced.subject) == (ADMIN, "store-a")
    assert replaced.details == {
        "certificate_sha256": sha(2),
        "was_revoked": True,
        "key_changed": True,
    }


def test_store_arguments_are_checked(registry: Registry) -> None:
    with pytest.raises(RegistryValueError, match="time zone"):
        registry.register_store("store-a", pem(1), sha(1), datetime(2025, 1, 1))
    with pytest.raises(RegistryValueError, match="PEM"):
        registry.register_store("store-a", "ssh-ed25519 AAAA", sha(1), T0)
    with pytest.raises(RegistryValueError, match="64 hex"):
        registry.register_store("store-a", pem(1), "abc", T0)
    with pytest.raises(RegistryValueError, match="empty"):
        registry.register_store(" ", pem(1), sha(1), T0)
    assert registry.list_stores() == []
    # Errors are the coordinator's, so the CLI prints them as one line.
    assert issubclass(RegistryValueError, CoordinatorError)


def test_heartbeats_of_a_thousand_stores_in_one_batch(registry_url: str) -> None:
    with open_registry(registry_url) as registry:
        names = [f"store-{n:04d}" for n in range(1000)]
        # Registered straight into the table: a thousand audited registrations would only
        # make the test slow.
        engine = create_engine(registry_url)
        with engine.begin() as connection:
            connection.execute(
                insert(StoreRow.metadata.tables["stores"]),
                [
                    {
                        "name": name,
                        "public_key_pem": pem(1),
                        "certificate_sha256": sha(1),
                        "registered_at": T0,
                    }
                    for name in names
                ],
            )
        engine.dispose()
        beats = [
            Heartbeat(
                name,
                at(60),
                {
                    "members_enrolled": n,
                    "key_ok": True,
                    "software_version": "0.1.0",
                    "disk_free_fraction": 0.5,
                },
                n % 3,
            )
            for n, name in enumerate(names)
        ]
        # A store twice in one batch keeps its newest; an unknown one is reported, not fatal.
        beats.append(Heartbeat("store-0007", at(30), {"members_enrolled": -1}, 9))
        beats.append(Heartbeat("store-9999", at(60), {}, 0))
        started = time.perf_counter()
        result = registry.record_heartbeats(beats)
        seconds = time.perf_counter() - started
        assert seconds < 5.0, f"1,000 heartbeats took {seconds:.2f} s"
        assert result == HeartbeatResult(recorded=1000, unknown_stores=("store-9999",))

        stores = registry.list_stores()
        assert len(stores) == 1000
        for n, store in enumerate(stores):
            assert store.last_seen == at(60)
            assert store.model_version == n % 3
            assert store.last_health == {
                "members_enrolled": n,
                "key_ok": True,
                "software_version": "0.1.0",
                "disk_free_fraction": 0.5,
            }
        # A late, older heartbeat does not overwrite a newer one.
        registry.record_heartbeats([Heartbeat("store-0001", at(59), {"members_enrolled": 0}, 2)])
        assert registry.get_store("store-0001").model_version == 1  # type: ignore[union-attr]
        by_version = registry.stores_by_model_version()
        assert sorted(by_version) == [0, 1, 2]
        assert sum(len(v) for v in by_version.values()) == 1000
        assert by_version[2][0] == "store-0002"
        assert registry.record_heartbeats([]) == HeartbeatResult(recorded=0)


def test_heartbeat_health_holds_aggregate_numbers_only(registry: Registry) -> None:
    register(registry, "store-a", "store-b", "store-c", "store-d", "store-e")
    bad = {
        "store-a": {"template": [0.1] * 128},
        "store-b": {"crop": b"\x89PNG"},
        "store-c": {"nested": {"a": 1}},
        "store-d": {"software_version": "x" * 500},
    }
    beats = [Heartbeat(name, T0, health, 0) for name, health in bad.items()]  # type: ignore[arg-type]
    beats.append(Heartbeat("store-e", T0, {"members_enrolled": 4}, 0))
    result = registry.record_heartbeats(beats)
    # The faulty stores are dropped and named; the good one is recorded all the same.
    assert result.recorded == 1 and sorted(result.refused) == sorted(bad)
    assert all("aggregate" in why for why in result.refused.values())
    assert [s.name for s in registry.list_stores() if s.last_seen is not None] == ["store-e"]
    with pytest.raises(RegistryValueError, match="time zone"):
        registry.record_heartbeats([Heartbeat("store-e", datetime(2025, 1, 1), {}, 0)])


# -- commands ----------------------------------------------------------------------------------


def adopt(version: int) -> dict[str, object]:
    return {"version": version, "sha256": sha(version), "size_bytes": 10, "manifest_json": "{}"}


def test_command_queue_order_and_acknowledgement(registry: Registry) -> None:
    register(registry, "store-a", "store-b")
    # Issued out of time order on purpose: the queue is the order they were queued in.
    queued = [
        registry.queue_command("store-a", "adopt-model", adopt(v), at(10 - v)) for v in (1, 2, 3)
    ]
    other = registry.queue_command("store-b", "adopt-model", adopt(7), T0)

    assert [c.command_id for c in registry.pending_commands("store-a", 10)] == [
        c.command_id for c in queued
    ]
    assert [c.payload["version"] for c in registry.pending_commands("store-a", 2)] == [1, 2]
    assert registry.pending_counts() == {"store-a": 3, "store-b": 1}
    assert queued[0].kind == "adopt-model" and queued[0].pending

    first = queued[0].command_id
    assert registry.acknowledge(first, "store-a", "adopted", b'{"a":1}', b"sig-1", True, at(20))
    # The first receipt stands: a retry (or a different receipt) is not recorded.
    assert not registry.acknowledge(
        first, "store-a", "refused", b'{"a":2}', b"sig-2", False, at(30)
    )
    stored = registry.get_command(first)
    assert stored is not None
    assert (stored.outcome, stored.receipt_body, stored.receipt_signature) == (
        "adopted",
        b'{"a":1}',
        b"sig-1",
    )
    assert (stored.receipt_verified, stored.acknowledged_at, stored.pending) == (
        True,
        at(20),
        False,
    )

    with pytest.raises(WrongStoreError, match="another store"):
        registry.acknowledge(other.command_id, "store-a", "adopted", b"{}", b"", True, at(40))
    with pytest.raises(RegistryNotFoundError, match="pull its commands again"):
        registry.acknowledge("no-such-id", "store-a", "adopted", b"{}", b"", True, at(40))
    assert registry.get_command(other.command_id).pending  # type: ignore[union-attr]

    assert [c.payload["version"] for c in registry.pending_commands("store-a", 10)] == [2, 3]
    assert registry.pending_counts() == {"store-a": 2, "store-b": 1}
    acked = registry.read_audit(action="command-acknowledged")
    assert len(acked) == 1
    assert (acked[0].actor, acked[0].subject) == ("store:store-a", first)
    assert acked[0].details == {"kind": "adopt-model", "outcome": "adopted", "verified": True}


def test_command_queue_refuses_what_it_cannot_deliver(registry: Registry) -> None:
    register(registry, "store-a", "store-b")
    registry.revoke_store("store-b", T0)
    with pytest.raises(RegistryValueError, match="request_erasure"):
        registry.queue_command("store-a", "erase-member", {"member_id": "m"}, T0)
    with pytest.raises(RegistryValueError, match="unknown"):
        registry.queue_command("store-a", "reboot", {}, T0)
    with pytest.raises(RegistryValueError, match="sha256"):
        registry.queue_command("store-a", "adopt-model", {"version": 1}, T0)
    with pytest.raises(RegistryConflictError, match="revoked"):
        registry.queue_command("store-b", "adopt-model", adopt(1), T0)
    with pytest.raises(RegistryNotFoundError, match="store-z"):
        registry.queue_command("store-z", "adopt-model", adopt(1), T0)
    with pytest.raises(RegistryValueError, match="between 1 and"):
        registry.pending_commands("store-a", 0)
    assert registry.pending_counts() == {}
    many = registry.queue_commands(["store-a", "store-a"], "adopt-model", adopt(1), T0)
    assert len(many) == 1


# -- erasures ----------------------------------------------------------------------------------


def answer(
    registry: Registry, request_id: str, store: str, outcome: str, verified: bool, t: float
) -> bool:
    erasure = registry.get_erasure(request_id)
    assert erasure is not None
    (part,) = [p for p in erasure.stores if p.store == store]
    body = json.dumps({"outcome": outcome, "request": request_id}).encode()
    return registry.acknowledge(part.command_id, store, outcome, body, b"sig", verified, at(t))


def test_erasure_completes_only_when_every_store_erased_with_a_verified_receipt(
    registry: Registry,
) -> None:
    register(registry, "store-a", "store-b", "store-c")
    erasure = registry.request_erasure("LOYAL-0042", ADMIN, ["store-c", "store-a", "store-b"], T0)
    assert (erasure.member_id, erasure.requested_by, erasure.requested_at) == (
        "LOYAL-0042",
        ADMIN,
        T0,
    )
    assert not erasure.complete and erasure.completed_at is None
    assert [(p.store, p.state) for p in erasure.stores] == [
        ("store-a", "pending"),
        ("store-b", "pending"),
        ("store-c", "pending"),
    ]
    pulled = registry.pending_commands("store-b", 10)
    assert len(pulled) == 1 and pulled[0].kind == "erase-member"
    assert pulled[0].payload == {"request_id": erasure.request_id, "member_id": "LOYAL-0042"}

    rid = erasure.request_id
    assert answer(registry, rid, "store-a", ERASED, True, 10)
    assert answer(registry, rid, "store-b", REFUSED, True, 11)
    assert answer(registry, rid, "store-c", ERASED, False, 12)  # signature did not verify
    state = registry.get_erasure(rid)
    assert state is not None and not state.complete
    assert [(p.store, p.state, p.receipt_verified, p.answered_at) for p in state.stores] == [
        ("store-a", "erased", True, at(10)),
        ("store-b", "refused", True, at(11)),
        ("store-c", "erased", False, at(12)),
    ]
    assert json.loads(state.stores[0].receipt_body or b"") == {"outcome": "erased", "request": rid}

    # A second request where every store erases with a verified receipt.
    second = registry.request_erasure(
        "LOYAL-0043", ADMIN, ["store-a", "store-b", "store-c"], at(20)
    )
    for n, store in enumerate(["store-a", "store-b"]):
        answer(registry, second.request_id, store, ERASED, True, 30 + n)
        assert not registry.get_erasure(second.request_id).complete  # type: ignore[union-attr]
    answer(registry, second.request_id, "store-c", ERASED, True, 40)
    done = registry.get_erasure(second.request_id)
    assert done is not None and done.complete and done.completed_at == at(40)
    assert not answer(registry, second.request_id, "store-c", REFUSED, True, 50)
    assert registry.get_erasure(second.request_id) == done

    assert [e.request_id for e in registry.list_erasures()] == [second.request_id, rid]
    assert [e.request_id for e in registry.list_erasures(limit=1)] == [second.request_id]
    assert registry.get_erasure("no-such-request") is None
    completed = registry.read_audit(action="erasure-completed")
    assert [(r.subject, r.details) for r in completed] == [(second.request_id, {"stores": 3})]
    # The audit log names the request, never the member.
    assert all("LOYAL-00" not in json.dumps(r.details) for r in registry.read_audit(limit=1000))
    assert registry.read_audit(action="erasure-requested")[0].actor == ADMIN


def test_erasure_needs_known_trusted_stores(registry: Registry) -> None:
    register(registry, "store-a", "store-b")
    registry.revoke_store("store-b", T0)
    with pytest.raises(RegistryValueError, match="at least one store"):
        registry.request_erasure("LOYAL-1", ADMIN, [], T0)
    with pytest.raises(RegistryNotFoundError, match="store-x"):
        registry.request_erasure("LOYAL-1", ADMIN, ["store-a", "store-x"], T0)
    with pytest.raises(RegistryConflictError, match="revoked"):
        registry.request_erasure("LOYAL-1", ADMIN, ["store-a", "store-b"], T0)
    # Nothing half-written: no request, no command.
    assert registry.list_erasures() == [] and registry.pending_counts() == {}


def test_last_two_receipts_at_once_still_complete_the_erasure(registry: Registry) -> None:
    names = [f"store-{n}" for n in range(6)]
    register(registry, *names)
    erasure = registry.request_erasure("LOYAL-7", ADMIN, names, T0)
    barrier = threading.Barrier(len(names))

    def ack(part_index: int) -> bool:
        part = erasure.stores[part_index]
        barrier.wait()
        return registry.acknowledge(
            part.command_id, part.store, ERASED, b"{}", b"sig", True, at(part_index + 1)
        )

    with ThreadPoolExecutor(len(names)) as pool:
        assert all(pool.map(ack, range(len(names))))
    done = registry.get_erasure(erasure.request_id)
    assert done is not None and done.complete
    assert len(registry.read_audit(action="erasure-completed")) == 1


# -- model versions and rollouts ----------------------------------------------------------------


def test_model_versions_are_idempotent_and_keep_the_manifest_exactly(registry: Registry) -> None:
    manifest = '{"version": 1,\n  "sha256": "ab",  "note": "caf\u00e9 \u2713"}\n'
    run = registry.start_run(3, T0)
    first = registry.add_model_version(
        1,
        sha(1001).upper(),
        4_078_592,
        "model-v0001.pt",
        manifest,
        True,
        "chain-2025",
        at(1),
        run.run_id,
    )
    assert first.sha256 == sha(1001) and first.manifest_json == manifest
    assert first.run_id == run.run_id and first.created_at == at(1)
    again = registry.add_model_version(
        1, sha(1001), 1, "other.pt", "{}", False, None, at(9)
    )  # same version and sha256: the first record stands
    assert again == first == registry.get_model_version(1)
    with pytest.raises(RegistryConflictError, match="next free version"):
        registry.add_model_version(1, sha(5), 1, "x.pt", "{}", True, None, at(9))
    with pytest.raises(RegistryNotFoundError, match="run 99"):
        registry.add_model_version(2, sha(5), 1, "x.pt", "{}", True, None, at(9), 99)
    with pytest.raises(RegistryValueError):
        registry.add_model_version(0, sha(5), 1, "x.pt", "{}", True, None, at(9))
    add_version(registry, 3)
    assert [m.version for m in registry.list_model_versions()] == [1, 3]
    assert registry.get_model_version(2) is None
    assert registry.read_audit(action="model-added")[-1].details["run_id"] == run.run_id


def test_promote_and_roll_back(registry: Registry) -> None:
    register(registry, "store-a", "store-b", "store-c")
    registry.revoke_store("store-c", T0)
    add_version(registry, 1, '{"v": 1}')
    add_version(registry, 2, '{"v": 2}')
    assert registry.promoted_version() == 0
    with pytest.raises(RegistryConflictError, match="nothing to roll back"):
        registry.rollback(ADMIN, T0)
    with pytest.raises(RegistryNotFoundError, match="v9"):
        registry.promote(9, ADMIN, T0)

    assert registry.promote(1, ADMIN, at(1)) == Rollout(1, 0, 2)
    assert registry.promote(2, ADMIN, at(2)) == Rollout(2, 1, 2)
    assert registry.promote(2, ADMIN, at(3)) == Rollout(2, 2, 0)  # already promoted
    assert registry.promoted_version() == 2
    assert registry.rollback(ADMIN, at(4)) == Rollout(1, 2, 2)
    assert registry.promoted_version() == 1
    assert registry.rollback(ADMIN, at(5)) == Rollout(0, 1, 2)
    assert registry.promoted_version() == 0
    with pytest.raises(RegistryConflictError, match="nothing to roll back"):
        registry.rollback(ADMIN, at(6))

    # Each rollout told every trusted store, in order, what to run; revoked stores get nothing.
    for store in ("store-a", "store-b"):
        told = [c.payload for c in registry.pending_commands(store, 100)]
        assert [p["version"] for p in told] == [1, 2, 1, 0]
        assert told[1] == {
            "version": 2,
            "sha256": sha(1002),
            "size_bytes": 4_078_592,
            "manifest_json": '{"v": 2}',
        }
        assert told[3] == {"version": 0, "sha256": "", "size_bytes": 0, "manifest_json": ""}
    assert registry.pending_commands("store-c", 100) == []

    # After a rollback, a new promotion stacks on what is standing.
    assert registry.promote(2, ADMIN, at(7)) == Rollout(2, 0, 2)
    assert registry.promote(1, ADMIN, at(8)) == Rollout(1, 2, 2)
    assert registry.rollback(ADMIN, at(9)) == Rollout(2, 1, 2)
    promoted = registry.read_audit(action="model-promoted", limit=10)
    assert [(r.subject, r.actor) for r in promoted][:2] == [("1", ADMIN), ("2", ADMIN)]
    assert registry.read_audit(action="model-rolled-back")[0].details == {
        "previous_version": 1,
        "stores_commanded": 2,
    }


# -- runs --------------------------------------------------------------------------------------


def test_runs_and_rounds_round_trip(registry: Registry) -> None:
    run = registry.start_run(3, T0, actor=ADMIN)
    assert (run.run_id, run.status, run.rounds_planned, run.started_at) == (1, "running", 3, T0)
    assert (run.finished_at, run.model_version, run.message, run.rounds) == (None, None, "", ())
    registry.record_round(run.run_id, 1, {"train-loss": 2.5, "num-examples": 300})
    registry.record_round(run.run_id, 2, {"train-loss": 9.9})
    registry.record_round(run.run_id, 2, {"train-loss": 2.1, "stores-answered": 3})  # replaces
    with pytest.raises(RegistryValueError, match="finite"):
        registry.record_round(run.run_id, 3, {"train-loss": float("nan")})
    add_version(registry, 1)
    finished = registry.finish_run(run.run_id, "completed", 1, "3 stores, 2 rounds", at(60))
    assert (finished.status, finished.model_version, finished.finished_at) == (
        "completed",
        1,
        at(60),
    )
    assert [(r.round, r.metrics) for r in finished.rounds] == [
        (1, {"train-loss": 2.5, "num-examples": 300.0}),
        (2, {"train-loss": 2.1, "stores-answered": 3.0}),
    ]
    with pytest.raises(RegistryConflictError, match="already finished"):
        registry.finish_run(run.run_id, "failed", None, "", at(61))
    with pytest.raises(RegistryConflictError, match="already finished"):
        registry.record_round(run.run_id, 3, {"train-loss": 1.0})

    failed = registry.start_run(5, at(100))
    with pytest.raises(RegistryNotFoundError, match="v7"):
        registry.finish_run(failed.run_id, "completed", 7, "", at(101))
    with pytest.raises(RegistryValueError, match="status"):
        registry.finish_run(failed.run_id, "done", None, "", at(101))
    registry.finish_run(failed.run_id, "failed", None, "no store trained", at(102))
    with pytest.raises(RegistryNotFoundError):
        registry.record_round(99, 1, {})

    listed = registry.list_runs()
    assert listed[0] == finished == registry.get_run(run.run_id)
    assert (listed[1].status, listed[1].message, listed[1].rounds) == (
        "failed",
        "no store trained",
        (),
    )
    assert registry.get_run(99) is None
    assert actions(registry) == [
        "run-started",
        "model-added",
        "run-finished",
        "run-started",
        "run-finished",
    ]
    assert registry.read_audit(action="run-started")[-1].actor == ADMIN


# -- audit -------------------------------------------------------------------------------------


def test_audit_reads_newest_first_filters_and_streams(registry: Registry) -> None:
    ids = [
        registry.audit(
            "coordinator", "model-refused" if n % 2 else "note", f"s{n}", {"n": n}, at(n)
        )
        for n in range(10)
    ]
    assert ids == sorted(ids) and len(set(ids)) == 10
    newest = registry.read_audit(limit=3)
    assert [r.subject for r in newest] == ["s9", "s8", "s7"]
    assert newest[0].at == at(9) and newest[0].details == {"n": 9}
    assert [r.subject for r in registry.read_audit(limit=3, before_id=newest[-1].id)] == [
        "s6",
        "s5",
        "s4",
    ]
    assert [r.subject for r in registry.read_audit(action="model-refused")] == [
        "s9",
        "s7",
        "s5",
        "s3",
        "s1",
    ]
    assert [r.subject for r in registry.audit_after(ids[6])] == ["s7", "s8", "s9"]
    assert [r.subject for r in registry.audit_after(0, limit=2)] == ["s0", "s1"]
    assert registry.audit_after(ids[-1]) == []
    assert registry.last_audit_id() == ids[-1]


@pytest.mark.parametrize(
    "details",
    [
        {"template": [0.01] * 128},  # a face template is far longer than any audit list
        {"crop": b"\xff\xd8\xff"},
        {"nested": {"a": 1}},
        {"photo": "x" * 5000},
        {"loss": float("inf")},
        {1: "non-string key"},
        {"list": [{"a": 1}]},
    ],
)
def test_audit_details_never_hold_blobs(details: dict[object, object]) -> None:
    from coordinator.registry.validation import audit_details

    with pytest.raises(RegistryValueError):
        audit_details(details)  # type: ignore[arg-type]


def test_audit_details_round_trip(registry: Registry) -> None:
    details = {"s": "x", "i": 3, "f": 0.25, "b": False, "none": None, "names": ["a", 1, None]}
    registry.audit(ADMIN, "note", "subject", details, T0)
    assert registry.read_audit()[0].details == details
    with pytest.raises(RegistryValueError, match="templates or images"):
        registry.audit(ADMIN, "note", "subject", {"blob": b"123"}, T0)
    assert len(registry.read_audit()) == 1


def test_times_come_back_as_the_same_instant_in_utc(registry: Registry) -> None:
    tokyo = datetime(2025, 6, 1, 18, 30, 0, 999999, tzinfo=timezone(timedelta(hours=9)))
    store = registry.register_store("store-a", pem(1), sha(1), tokyo)
    assert store.registered_at == tokyo and store.registered_at.utcoffset() == timedelta(0)
    assert registry.get_store("store-a").registered_at.tzinfo == UTC  # type: ignore[union-attr]
    with pytest.raises(RegistryValueError, match="time zone"):
        registry.start_run(1, datetime(2025, 6, 1))


# -- opening, migrations, failures ---------------------------------------------------------------


def test_reopening_keeps_everything_and_does_not_migrate_again(
    registry_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_registry(registry_url) as registry:
        register(registry, "store-a")
        erasure = registry.request_erasure("LOYAL-1", ADMIN, ["store-a"], T0)
        add_version(registry, 1)
        registry.promote(1, ADMIN, at(1))
        before = (
            registry.list_stores(),
            registry.list_erasures(),
            registry.list_model_versions(),
            registry.read_audit(),
            registry.pending_commands("store-a", 100),
        )

    def no_upgrade(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a database at the newest revision was migrated again")

    monkeypatch.setattr("alembic.command.upgrade", no_upgrade)
    with open_registry(registry_url) as registry:
        after = (
            registry.list_stores(),
            registry.list_erasures(),
            registry.list_model_versions(),
            registry.read_audit(),
            registry.pending_commands("store-a", 100),
        )
        assert after == before
        assert registry.promoted_version() == 1
        assert registry.get_erasure(erasure.request_id) == erasure
        # Ids keep counting where they were.
        assert registry.audit(ADMIN, "note", "x", {}, at(9)) > before[3][0].id


def test_migrated_tables_match_the_models(registry_url: str) -> None:
    open_registry(registry_url).close()
    engine = create_engine(registry_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
            assert context.get_current_heads() == ("0001",)
    finally:
        engine.dispose()


def test_a_database_from_a_newer_loyalnet_is_refused(registry_url: str) -> None:
    open_registry(registry_url).close()
    engine = create_engine(registry_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0042_future'"))
    engine.dispose()
    with pytest.raises(RegistrySchemaError, match="newer loyalnet") as caught:
        open_registry(registry_url)
    message = str(caught.value)
    assert "0042_future" in message and "upgrade loyalnet" in message
    assert ":loyalnet@" not in message  # the password is masked


def test_opening_at_once_from_many_threads(registry_url: str) -> None:
    with ThreadPoolExecutor(4) as pool:
        registries = list(pool.map(lambda _: open_registry(registry_url), range(4)))
    try:
        registries[0].register_store("store-a", pem(1), sha(1), T0)
        assert [s.name for r in registries for s in r.list_stores()] == ["store-a"] * 4
    finally:
        for registry in registries:
            registry.close()


def test_two_processes_opening_one_fresh_database_at_once(registry_url: str) -> None:
    # Each process migrates under the registry's lock; neither may see the other's half.
    script = (
        "import sys\n"
        "from coordinator.registry import open_registry\n"
        "open_registry(sys.argv[1]).close()\n"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script, registry_url], stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr.decode()
    with open_registry(registry_url) as registry:
        assert registry.list_stores() == []


def test_unreachable_postgresql_fails_fast_and_clearly() -> None:
    started = time.perf_counter()
    with pytest.raises(RegistryUnavailableError) as caught:
        open_registry("postgresql+psycopg://loyalnet:s3cret@127.0.0.1:1/coordinator")
    assert time.perf_counter() - started < 10
    message = str(caught.value)
    assert "s3cret" not in message and "***" in message
    assert "127.0.0.1:1/coordinator" in message and "bash scripts/postgres.sh" in message


def test_bad_urls_are_refused_clearly(tmp_path: Path) -> None:
    folder = tmp_path / "missing"
    with pytest.raises(RegistryUnavailableError, match="exists"):
        open_registry(default_database_url(folder))
    with pytest.raises(RegistryValueError, match="in memory"):
        open_registry("sqlite://")
    with pytest.raises(RegistryValueError, match="neither SQLite nor PostgreSQL"):
        open_registry("mysql://u:p@localhost/db")
    with pytest.raises(RegistryValueError, match="not a valid database URL"):
        open_registry("not a url at all")
    assert default_database_url(Path("/srv/chain")) == "sqlite:////srv/chain/coordinator.db"


def test_a_closed_registry_says_so(registry_url: str) -> None:
    registry = open_registry(registry_url)
    registry.close()
    with pytest.raises(RegistryError, match="closed"):
        registry.list_stores()


def test_sqlite_runs_in_wal_with_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    with open_registry(default_database_url(tmp_path)) as registry:
        # The engine is private; its connection settings are what this test is about.
        with registry._engine.connect() as connection:
            pragma = connection.exec_driver_sql
            assert pragma("PRAGMA journal_mode").scalar() == "wal"
            assert pragma("PRAGMA foreign_keys").scalar() == 1
            assert pragma("PRAGMA busy_timeout").scalar() == 15_000
        assert registry.dialect == "sqlite"
