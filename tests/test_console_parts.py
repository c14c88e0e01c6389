"""The console's parts that need no screen: back-off, wording, filters, the rollback target,
and the poller's way through an outage (with a scripted connection, no network)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from coordinator.admin_client import AdminError
from loyalnet.chain.v1 import chain_pb2
from loyalnet_cli.console.backoff import Backoff
from loyalnet_cli.console.format import age, metric_names, metrics_line, number, size, version_name
from loyalnet_cli.console.link import AdminSource, ConsoleLink
from loyalnet_cli.console.modals.erase_form import erase_problem
from loyalnet_cli.console.modals.train_form import rounds_problem
from loyalnet_cli.console.poller import LinkDown, Poller
from loyalnet_cli.console.rollout import rollback_target
from loyalnet_cli.console.snapshot import ChainSnapshot
from loyalnet_cli.console.views.audit import matches

NOW = datetime(2025, 6, 2, 14, 2, 7, tzinfo=UTC)


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_success() -> None:
    backoff = Backoff(1.0, 10.0)
    assert [backoff.next() for _ in range(6)] == [1, 2, 4, 8, 10, 10]
    backoff.reset()
    assert backoff.next() == 1
    with pytest.raises(ValueError):
        Backoff(5.0, 1.0)


def test_short_words_for_narrow_tables() -> None:
    assert [age(NOW - timedelta(seconds=s), NOW) for s in (-3, 59, 61, 7200, 90000)] == [
        "0s ago",
        "59s ago",
        "1m ago",
        "2h ago",
        "1d ago",
    ]
    assert age(None, NOW) == "never"
    assert (size(512), size(3 * 1024**2), size(int(41.5 * 1024**3))) == ("512B", "3M", "41.5G")
    assert (version_name(0), version_name(7)) == ("pretrained", "v7")
    assert (number(250.0), number(0.45678)) == ("250", "0.4568")


def test_an_erasure_needs_the_same_usable_id_twice() -> None:
    assert erase_problem("", "") is not None
    assert "differ" in (erase_problem("M-1", "M-2") or "")
    assert "blanks" in (erase_problem(" M-1", " M-1") or "")
    assert erase_problem("M-[1]", "M-[1]") is None


def test_rounds_are_empty_or_a_whole_number() -> None:
    assert rounds_problem("") is None and rounds_problem("5") is None
    assert rounds_problem("-1") is not None and rounds_problem("5000") is not None


def test_the_audit_filter_looks_at_action_actor_and_subject() -> None:
    record = chain_pb2.AuditRecord(actor="admin:ada", action="model-promoted", subject="3")
    assert matches(record, "") and matches(record, " PROMOTED ") and matches(record, "ada")
    assert not matches(record, "erasure")


def _rollout(record_id: int, action: str, version: int) -> chain_pb2.AuditRecord:
    return chain_pb2.AuditRecord(id=record_id, action=action, subject=str(version))


@pytest.mark.parametrize(
    ("history", "target"),
    [
        ([], None),
        ([("p", 1)], 0),
        ([("p", 1), ("p", 2)], 1),
        ([("p", 1), ("p", 2), ("r", 1)], 0),
        ([("p", 1), ("p", 2), ("r", 1), ("r", 0)], None),
        # Promoting 1 again stacks it; after undoing it and 2, the first 1 stands.
        ([("p", 1), ("p", 2), ("p", 1), ("r", 2), ("r", 1)], 0),
        ([("p", 1), ("p", 2), ("p", 1), ("r", 2)], 1),
    ],
)
def test_the_rollback_target_replays_the_promotion_history(
    history: list[tuple[str, int]], target: int | None
) -> None:
    actions = {"p": "model-promoted", "r": "model-rolled-back"}
    records = [_rollout(n, actions[kind], v) for n, (kind, v) in enumerate(history, 1)]
    assert rollback_target(reversed(records)) == target  # the order read does not matter


class Scripted:
    """A connection whose every call fails while ``down`` is set."""

    def __init__(self, down: threading.Event) -> None:
        self._down = down
        self.closed = False

    def _call(self) -> None:
        if self._down.is_set():
            raise AdminError("connection refused", grpc.StatusCode.UNAVAILABLE)

    def whoami(self) -> chain_pb2.WhoAmIReply:
        self._call()
        return chain_pb2.WhoAmIReply(name="ada", role="admin", chain="c")

    def stores(self) -> list[chain_pb2.Store]:
        self._call()
        return []

    def runs(self) -> list[chain_pb2.TrainingRun]:
        return []

    def models(self) -> chain_pb2.ListModelsReply:
        return chain_pb2.ListModelsReply()

    def erasures(self) -> list[chain_pb2.Erasure]:
        return []

    def audit(self, limit: int = 200, action: str = "") -> list[chain_pb2.AuditRecord]:
        return []

    def erase(self, member_id: str) -> chain_pb2.Erasure:
        raise NotImplementedError

    def promote(self, version: int) -> chain_pb2.Rollout:
        raise NotImplementedError

    def rollback(self) -> chain_pb2.Rollout:
        raise NotImplementedError

    def train(self, rounds: int = 0) -> chain_pb2.TrainingRun:
        raise NotImplementedError

    def events(self, after_event_id: int = 0) -> Iterator[chain_pb2.ChainEvent]:
        raise NotImplementedError

    def close(self) -> None:
        self.closed = True


def test_the_poller_reports_an_outage_once_per_try_and_recovers_on_a_new_connection() -> None:
    down = threading.Event()
    connections: list[Scripted] = []

    def connect() -> AdminSource:
        connections.append(Scripted(down))
        return connections[-1]

    snapshots: list[ChainSnapshot] = []
    outages: list[LinkDown] = []
    seen = threading.Semaphore(0)

    def on_snapshot(snapshot: ChainSnapshot) -> None:
        snapshots.append(snapshot)
        seen.release()

    def on_down(report: LinkDown) -> None:
        outages.append(report)
        seen.release()

    clock = iter(NOW + timedelta(seconds=n) for n in range(1000))
    poller = Poller(
        ConsoleLink("h:1", connect), lambda: next(clock), on_snapshot, on_down, 60, Backoff(60, 60)
    )
    thread = threading.Thread(target=poller.run)
    thread.start()
    try:
        assert seen.acquire(timeout=5) and len(snapshots) == 1
        down.set()
        for _ in range(2):
            poller.refresh_now()
            assert seen.acquire(timeout=5)
        assert len(outages) == 2 and outages[0].unreachable
        # One outage: the same start, a retry planned after the back-off.
        assert outages[0].since == outages[1].since
        assert outages[1].retry_at == outages[1].since + timedelta(seconds=1 + 60)
        down.clear()
        poller.refresh_now()
        assert seen.acquire(timeout=5) and len(snapshots) == 2
        # Each failure dropped its connection; the recovery used a fresh one.
        assert [c.closed for c in connections] == [True, True, False]
    finally:
        poller.stop()
        thread.join(timeout=5)
    assert not thread.is_alive() and connections[-1].closed


def test_metrics_are_shown_with_what_an_admin_watches_first() -> None:
    names = ["arrays-bytes", "members", "round-seconds", "loss-last-epoch", "zeta"]
    assert metric_names(names)[:4] == [
        "loss-last-epoch",
        "round-seconds",
        "arrays-bytes",
        "members",
    ]
    assert metric_names(["b", "a"]) == ["a", "b"]
    assert metric_names([]) == []
    line = metrics_line({"arrays-bytes": 12.0, "round-seconds": 120.7, "train-loss": 0.4})
    assert line.startswith("train-loss 0.4 · round-seconds 120")
